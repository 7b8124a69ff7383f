"""The driver of `medgrid tune`, its start-up: plan the sweep from its space, load the data
once, launch the tracking, then hand over to `sweep_run` (Ray, the parent run, Tune). Nothing
here imports Ray or MLflow, so a bad space or data file is refused in a fraction of a second
and the private tracking server starts before those seconds of imports.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from pipeline import data
from pipeline.config import Distribution, expand, load_space, merge_identical, with_seeds
from pipeline.errors import UserError
from pipeline.interrupts import stop_signals
from pipeline.output_loss import stop_when_output_closed
from pipeline.plan import ALSO_KEY, NAME_KEY, SweepPlan
from pipeline.tracking.names import DEFAULT_TRACKING_URI
from pipeline.tracking.server import (
    is_remote,
    open_tracking,
    opens_without_writing,
    require_server,
)
from pipeline.trial import SessionFactory, TrialSession


@dataclass(frozen=True)
class SweepOptions:
    """What `medgrid tune` was asked to do, beyond the space file."""

    data: Path | None = None
    dataset: str = "octmnist"  # octmnist | synthetic
    test_split: str = "hw1"
    experiment: str = "medgrid"
    tracking_uri: str = DEFAULT_TRACKING_URI
    artifacts_dir: Path = Path("mlruns")
    ray_address: str | None = None
    num_cpus: int | None = None
    max_concurrent: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    epochs: int | None = None
    limit_train: int | None = None
    resume: bool = False
    storage: Path = Path("ray_results")
    max_failures: int = 1
    checkpoint_every: int | None = None  # None: the space's (default 1, every epoch)
    verbose: bool = False
    seeds: tuple[int, ...] | None = None  # replaces every study's seeds

    def overrides(self) -> dict[str, str]:
        """The options that change what trials do, recorded on every run."""
        seeds = ",".join(map(str, self.seeds)) if self.seeds else None
        chosen = {"epochs_cap": self.epochs, "limit_train": self.limit_train, "seeds": seeds}
        return {f"override.{k}": str(v) for k, v in chosen.items() if v is not None}


@dataclass(frozen=True)
class PlannedSweep:
    """A loaded space, ready for Tune: its name, content hash and plan."""

    name: str
    content_sha256: str
    plan: SweepPlan
    sampled: dict[str, str]  # sampled param -> distribution kind (empty for a grid)


def plan_sweep(space: Path, options: SweepOptions) -> PlannedSweep:
    """Load and validate the space; grid points longest first, or the sampled study (epochs
    capped by `--epochs` either way, and ASHA's horizon with them)."""
    sweep = with_seeds(load_space(space), options.seeds)
    cap = options.epochs
    every = sweep.checkpoint_every if options.checkpoint_every is None else options.checkpoint_every
    scheduler = sweep.scheduler
    if scheduler is not None and cap is not None and (scheduler.max_t or cap) > cap:
        scheduler = scheduler.model_copy(update={"max_t": cap,
                                                 "grace_period": min(scheduler.grace_period, cap)})
    study = sweep.sampled_study
    if study is not None:
        if cap is not None and int(study.params.get("epochs", cap)) > cap:
            study = study.model_copy(update={"params": {**study.params, "epochs": cap}})
        plan = SweepPlan(sweep.search, scheduler, every, study=study)
        sampled = {k: v.kind for k, v in study.params.items() if isinstance(v, Distribution)}
        sampled.update({k: "grid" for k, v in study.params.items() if isinstance(v, list)})
        return PlannedSweep(sweep.name, sweep.content_sha256, plan, sampled)
    trials = expand(sweep)
    trial_names = [trial.name for trial in trials]
    for name in trial_names:
        if trial_names.count(name) > 1:
            raise UserError(f"{space}: two trials share the name '{name}'; "
                            "expected every grid point once")
    points: dict[str, dict[str, object]] = {}
    for trial in merge_identical(trials):
        config = trial.config
        if cap is not None and config.epochs > cap:
            config = config.model_copy(update={"epochs": cap})
        points[trial.name] = {**config.model_dump(), NAME_KEY: trial.name,
                              ALSO_KEY: json.dumps(trial.also, sort_keys=True)}
    ordered = tuple(points[name] for name in longest_first(points))
    plan = SweepPlan(sweep.search, scheduler, every, points=ordered)
    return PlannedSweep(sweep.name, sweep.content_sha256, plan, {})


def longest_first(points: dict[str, dict[str, object]]) -> list[str]:
    """Trial names, most epochs first: long trials start early, so the sweep does not end
    waiting on one of them while the other CPUs sit idle (file order among equals)."""
    return sorted(points, key=lambda name: -int(str(points[name]["epochs"])))


def git_commit() -> str:
    """The commit of the medgrid checkout, or 'unknown' outside git."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_sweep(space: Path, options: SweepOptions,
              make_session: SessionFactory = TrialSession) -> int:
    """Run (or resume) the sweep in `space`; 0 when every trial finished, 1 when some failed.
    SIGINT/SIGTERM stop it cleanly (runs closed KILLED, Ray and the tracking server shut down)
    and end in `SweepInterrupted`; so does losing stdout (`output_loss`).

    Start-up overlaps: the private tracking server is launched, and Ray and MLflow are imported
    and Ray started (`sweep_run`) while the server starts. The server is launched before the
    data loads where that writes nothing (a store already in place: a warm start), otherwise
    once the data has been checked, so that bad input creates nothing."""
    planned = plan_sweep(space, options)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    if is_remote(options.tracking_uri):  # fail in seconds, before loading or synthesising data
        require_server(options.tracking_uri)
    tracking_args = (options.tracking_uri, options.artifacts_dir, options.storage.resolve())
    with stop_signals() as stops, stop_when_output_closed(stops), ExitStack() as stack:
        tracking = (stack.enter_context(open_tracking(*tracking_args))
                    if opens_without_writing(*tracking_args) else None)
        splits = data.load_dataset(options.dataset, options.data, options.test_split,
                                   options.limit_train)
        if splits.identity.name != "octmnist":
            identity = splits.identity
            print(f"[medgrid] NOTE: these runs use '{identity.name}' data ({identity.md5[:8]}), "
                  "not the real OCTMNIST; the runs are tagged so.", flush=True)
        started = time.monotonic()
        if tracking is None:
            tracking = stack.enter_context(open_tracking(*tracking_args))
        from pipeline import sweep_run  # Ray and MLflow: seconds, while the server starts

        sweep = sweep_run.StartedSweep(space, planned, options, [splits], tracking, stops,
                                       started)
        del splits  # the sweep hands its only reference to Ray's object store
        return sweep_run.run(sweep, make_session)


