"""A sweep once its space is planned, its data loaded and its tracking launched (`sweep.py`):
start Ray, create (or reopen, for `--resume`) the sweep's parent run, hand the trials to Ray
Tune, and close the parent run. This module imports Ray and MLflow (seconds), so `sweep.py`
imports it only after the private tracking server has been launched.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import __version__, data, figures, liveness
from pipeline import tune as tuning
from pipeline.data import Splits
from pipeline.disk_space import DiskWatch, written_dirs
from pipeline.errors import UserError
from pipeline.interrupts import StopSignals, SweepInterrupted
from pipeline.plan import NAME_KEY, UNFINISHED, Resources, TrialOutcome
from pipeline.sweep import PlannedSweep, SweepOptions, git_commit
from pipeline.tracking import names
from pipeline.tracking import runs as tracking
from pipeline.tracking.client import TrackingClient
from pipeline.tracking.records import RunRecord
from pipeline.tracking.server import PendingTracking
from pipeline.trial import SessionFactory, TrialSession


@dataclass
class StartedSweep:
    """What the start-up hands over: the plan, the options, the loaded data (a one-item list
    that `run` empties, so that Ray's object store ends up with the only copy), the tracking
    (a private server possibly still starting), the stop signals, and the start time."""

    space: Path
    planned: PlannedSweep
    options: SweepOptions
    splits: list[Splits]
    tracking: PendingTracking
    stops: StopSignals
    started: float


def run(sweep: StartedSweep, make_session: SessionFactory = TrialSession) -> int:
    """Start Ray (while the private server starts), create or reopen the parent run, hand the
    trials to Tune and close the parent run; Ray is shut down and the server let go at the
    end, whatever happened."""
    planned, options, stops = sweep.planned, sweep.options, sweep.stops
    started_ray = False
    try:
        earlier = None
        if options.resume:  # checked before Ray starts or anything is changed
            client = TrackingClient(sweep.tracking.uri())
            experiment_id = tracking.ensure_experiment(client, options.experiment)
            earlier = _resumable_parent(client, experiment_id, planned, sweep.space, options)
        started_ray = tuning.init_ray(options.ray_address, options.num_cpus, options.verbose)
        stops.install()  # over the SIGTERM handler ray.init installs
        resources = Resources(options.cpus_per_trial, options.gpus_per_trial)
        tuning.check_resources_fit(resources, planned.plan)  # before a parent exists
        uri = sweep.tracking.uri()
        client = TrackingClient(uri)
        experiment_id = tracking.ensure_experiment(client, options.experiment)
        splits = sweep.splits.pop()
        if earlier is not None:
            parent_id, ray_path = _reopen_parent(client, experiment_id, planned.name, earlier)
        else:
            tracking.close_stale_runs(client, experiment_id, planned.name)
            parent_id, ray_path = _new_parent(client, experiment_id, planned, sweep.space,
                                              splits.identity, options)
        trainable = _trainable(uri, experiment_id, parent_id, splits, planned, options,
                               resources, make_session)
        del splits  # the object store holds the data now; the driver's copy would idle
        with liveness.Heartbeat(lambda: tracking.heartbeat(client, parent_id)), \
                DiskWatch(written_dirs(options.storage, options.tracking_uri,
                                       options.artifacts_dir),
                          lambda low: stops.stop_for(str(low), "free some space")):
            return _drive(client, experiment_id, parent_id, ray_path, trainable,
                          planned, options, stops, sweep.started)
    finally:
        # Every run is closed by now (`_drive` closes them, also when stopped): the server
        # winds down while Ray shuts down, and its context awaits it last.
        stops.closing = stops.received  # a second signal while a stopped sweep shuts down
        sweep.tracking.release()
        if started_ray:
            tuning.shutdown_ray()


def _trainable(uri: str, experiment_id: str, parent_id: str, splits: Splits,
               planned: PlannedSweep, options: SweepOptions, resources: Resources,
               make_session: SessionFactory) -> Any:
    """Tune's trainable of the sweep, logging under `parent_id`, with the data in Ray."""
    plan, identity = planned.plan, splits.identity
    target = tuning.TrackingTarget(
        uri, experiment_id, parent_id,
        params={**options.overrides(), "dataset": identity.name,
                "test_split": identity.test_split},
        tags={names.DATASET_TAG: identity.name, names.DATASET_MD5_TAG: identity.md5},
    )
    print(f"[medgrid] sweep '{planned.name}': {plan.n_trials} trials "
          f"({plan.search.algorithm} search"
          f"{', ASHA early stopping' if plan.scheduler else ''}); tracking {uri} "
          f"(experiment '{options.experiment}', parent run {parent_id})", flush=True)
    return tuning.build_trainable(splits, plan, target, resources, make_session)


def _drive(client: TrackingClient, experiment_id: str, parent_id: str, ray_path: str,
           trainable: Any, planned: PlannedSweep, options: SweepOptions, stops: StopSignals,
           started: float) -> int:
    """Hand the trials to Tune and close the parent run: FINISHED or FAILED when every trial
    ended, KILLED (with its unfinished children) when the sweep was stopped or broke."""
    plan = planned.plan
    launch = tuning.LaunchOptions(options.storage.resolve(), Path(ray_path).name,
                                  options.max_concurrent, options.max_failures, options.verbose)
    try:
        broken = tuning.unreadable_state(ray_path) if options.resume else None
        if broken:
            # Tune would give up on its state and start a one-sample experiment: start the
            # sweep afresh instead. Its seeded searcher draws the same trials again.
            print(f"[medgrid] NOTE: Ray's saved state of this sweep cannot be read ({broken}); "
                  "the sweep was killed while Ray was writing it. Its trials start again in "
                  "Ray Tune: those finished in MLflow are kept as they are, the others train "
                  "from their first epoch.", flush=True)
        if options.resume and not broken:
            outcomes = tuning.restore(trainable, plan, ray_path, launch, stops)
        else:
            outcomes = tuning.launch(trainable, plan, launch, stops)
        stops.raise_if_received()  # Tune stopped the trials at our request: not a finished sweep
        if any(o.status == UNFINISHED for o in outcomes):
            raise RuntimeError("Ray Tune returned with trials that never ran")
        if len(outcomes) < plan.n_trials:
            raise RuntimeError(f"Ray Tune returned {len(outcomes)} of the sweep's "
                               f"{plan.n_trials} trials (a restore it could not complete?)")
    except BaseException as error:
        stops.closing = True  # a second Ctrl-C must not cut the closing of the runs short
        finished, closed = tracking.close_interrupted_sweep(client, experiment_id, parent_id)
        if isinstance(error, SweepInterrupted):
            error.detail = (f"{finished} of {plan.n_trials} trials finished, "
                            f"{_runs(closed, 'interrupted run')} closed as KILLED")
        raise
    redrawn = figures.redraw_pending(client, experiment_id, parent_id)
    if redrawn:
        print(f"[medgrid] drew the figures of {_runs(redrawn, 'finished trial')} here: "
              f"{'its worker' if redrawn == 1 else 'their workers'} ended before drawing them",
              flush=True)
    failed = [o for o in outcomes if o.status != "TERMINATED"]
    _log_summary(client, parent_id, outcomes, time.monotonic() - started)
    client.end_run(parent_id, names.FAILED if failed else names.FINISHED)
    _print_summary(outcomes, parent_id)
    return 1 if failed else 0


def _runs(count: int, what: str) -> str:
    """'1 interrupted run', '2 interrupted runs'."""
    return f"{count} {what}{'' if count == 1 else 's'}"


def _log_summary(client: TrackingClient, parent_id: str, outcomes: list[TrialOutcome],
                 wall_s: float) -> None:
    """The sweep's outcome on its parent run: counts, wall time, and the best trial by
    validation accuracy (stopped-early and diverged trials never count as best)."""
    finished = [o for o in outcomes if o.status == "TERMINATED"]
    diverged = [o for o in finished if o.metrics.get("diverged")]
    stopped = [o for o in finished if o.stopped_early]
    ranked = [o for o in finished if o not in diverged and o not in stopped
              and isinstance(o.metrics.get(names.VAL_ACC), float)
              and o.metrics[names.VAL_ACC] == o.metrics[names.VAL_ACC]]
    metrics = {"trials_finished": len(finished) - len(diverged) - len(stopped),
               "trials_diverged": len(diverged), "trials_stopped_early": len(stopped),
               "trials_failed": len(outcomes) - len(finished), "wall_time_s": wall_s}
    tags: dict[str, str] = {}
    if ranked:
        best = max(ranked, key=lambda o: o.metrics[names.VAL_ACC])
        metrics[f"best/{names.VAL_ACC}"] = best.metrics[names.VAL_ACC]
        if isinstance(best.metrics.get(names.TEST_ACC), float):
            metrics[f"best/{names.TEST_ACC}"] = best.metrics[names.TEST_ACC]
        tags[names.BEST_TRIAL_TAG] = best.name
    tracking.log_sweep_summary(client, parent_id, metrics, tags)


def _new_parent(client: TrackingClient, experiment_id: str, planned: PlannedSweep, space: Path,
                identity: data.DatasetIdentity, options: SweepOptions) -> tuple[str, str]:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    sweep_name, n_trials = planned.name, planned.plan.n_trials
    ray_path = str(options.storage.resolve() / f"{sweep_name}-{stamp}")
    search = planned.plan.search
    tags = {
        names.SPACE_FILE_TAG: str(space), names.SPACE_SHA_TAG: planned.content_sha256,
        "git_commit": git_commit(), "search": search.algorithm,
        names.DATASET_TAG: identity.name, names.DATASET_MD5_TAG: identity.md5,
        names.TEST_SPLIT_TAG: identity.test_split,
        "ray_address": options.ray_address or "local", "medgrid_version": __version__,
        names.RAY_PATH_TAG: ray_path,
    }
    if planned.sampled:
        tags[names.SAMPLED_TAG] = json.dumps(planned.sampled)
    if planned.plan.scheduler is not None:
        tags["scheduler"] = "asha " + json.dumps(planned.plan.scheduler.model_dump())
    params = {**options.overrides(), "n_trials": n_trials,
              "checkpoint_every": planned.plan.checkpoint_every, "n_train": identity.n_train,
              "n_val": identity.n_val, "n_test": identity.n_test}
    return tracking.start_sweep_run(client, experiment_id, sweep_name, tags, params), ray_path


def _resumable_parent(client: TrackingClient, experiment_id: str, planned: PlannedSweep,
                      space: Path, options: SweepOptions) -> RunRecord:
    """The parent run `--resume` continues, once it is known that the sweep can continue as it
    started: Ray left a state to restore, and the space and options are the ones it started
    with (restoring a changed space overwrites Ray's state with a sweep of nothing). Reads only:
    nothing in MLflow or Ray changes before these checks pass."""
    parent = tracking.latest_sweep_run(client, experiment_id, planned.name)
    if parent is None:
        raise UserError(f"--resume: no sweep '{planned.name}' in this experiment; "
                        "expected an earlier `medgrid tune` of the same space")
    if parent.status == "RUNNING" and tracking.sweep_alive(parent.tags):
        driver = liveness.describe(parent.tags.get(names.DRIVER_TAG))
        raise UserError(f"--resume: sweep '{planned.name}' is still running ({driver}); "
                        "expected it to end first (Ctrl-C or SIGTERM stops it cleanly)")
    ray_path = parent.tags.get(names.RAY_PATH_TAG, "")
    if not ray_path or not tuning.can_restore(ray_path):
        raise UserError(f"--resume: Ray left nothing to restore at {ray_path or '?'}; expected "
                        "the --storage directory of the interrupted sweep")
    then = parent.tags.get(names.SPACE_SHA_TAG)
    if then and then != planned.content_sha256:
        raise UserError(f"--resume: {space} changed since sweep '{planned.name}' started "
                        f"({_space_change(client, experiment_id, parent, planned)}); expected "
                        "the space it started with: restore the file and --resume again, or "
                        "start a new sweep (without --resume)")
    changed = _option_changes(parent.params, options.overrides())
    if changed:
        raise UserError(f"--resume: sweep '{planned.name}' started with other options "
                        f"({changed}); expected the same --epochs, --limit-train and --seeds, "
                        "or a new sweep (without --resume)")
    return parent


def _space_change(client: TrackingClient, experiment_id: str, parent: RunRecord,
                  planned: PlannedSweep) -> str:
    """What changed, as far as MLflow knows cheaply: the planned trial count, grid trials the
    sweep ran that the space no longer has, and the two content hashes."""
    before = parent.params.get("n_trials", "?")
    parts = [f"{before} trials planned then, {planned.plan.n_trials} now"]
    if planned.plan.study is None:
        planned_names = {str(point[NAME_KEY]) for point in planned.plan.points}
        ran = {run.name for run in tracking.sweep_children(client, experiment_id, parent.run_id)}
        gone = sorted(ran - planned_names)
        if gone:
            shown = ", ".join(f"'{name}'" for name in gone[:3])
            more = f" and {len(gone) - 3} more" if len(gone) > 3 else ""
            parts.append(f"no longer in it: {shown}{more}")
    sha = parent.tags.get(names.SPACE_SHA_TAG, "?")
    parts.append(f"sha256 {sha[:12]} then, {planned.content_sha256[:12]} now")
    return "; ".join(parts)


_OPTION_NAMES = {"override.epochs_cap": "--epochs", "override.limit_train": "--limit-train",
                 "override.seeds": "--seeds"}


def _option_changes(then: Mapping[str, str], now: Mapping[str, str]) -> str:
    """The overriding options that differ between the sweep's start and now ('' if none)."""
    changes = []
    for key, flag in _OPTION_NAMES.items():
        if then.get(key) != now.get(key):
            changes.append(f"{flag} {then.get(key, 'not given')} then, "
                           f"{now.get(key, 'not given')} now")
    return "; ".join(changes)


def _reopen_parent(client: TrackingClient, experiment_id: str, sweep_name: str,
                   parent: RunRecord) -> tuple[str, str]:
    """The checked parent RUNNING again, the runs its interruption left RUNNING closed."""
    ray_path = parent.tags[names.RAY_PATH_TAG]
    closed = tracking.close_stale_runs(client, experiment_id, sweep_name,
                                       keep_parent=parent.run_id)
    client.reopen_run(parent.run_id)
    tracking.claim_sweep_run(client, parent.run_id)
    print(f"[medgrid] resuming sweep run {parent.run_id} from {ray_path} "
          f"({_runs(closed, 'interrupted run')} closed as KILLED)", flush=True)
    return parent.run_id, ray_path


def _print_summary(outcomes: list[TrialOutcome], parent_id: str) -> None:
    finished = [o for o in outcomes if o.status == "TERMINATED"]
    diverged = sum(bool(o.metrics.get("diverged")) for o in finished)
    stopped = sum(o.stopped_early for o in finished)
    parts = [f"{len(finished) - diverged - stopped} finished", f"{diverged} diverged"]
    if stopped:
        parts.append(f"{stopped} stopped early")
    parts.append(f"{len(outcomes) - len(finished)} failed")
    print(f"[medgrid] {len(outcomes)} trials: {', '.join(parts)}; parent run {parent_id}",
          flush=True)
    for outcome in outcomes:
        if outcome.error:
            print(f"[medgrid]   FAILED {outcome.name}: {outcome.error.splitlines()[0]}",
                  file=sys.stderr, flush=True)
