"""The only module that knows Ray Tune: the trainable, resources per trial, failure handling,
launching a sweep and restoring one after the driver died.

Each trial reads everything from its Tune config (the trial's name) and from objects shared once
through Ray's object store (`tune.with_parameters`): the data, the planned configs and where to
log. Nothing assumes the driver's filesystem.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from mlflow.tracking import MlflowClient
from ray import tune

from pipeline.artifacts import write_trial_artifacts
from pipeline.config import TrialConfig
from pipeline.data import Splits
from pipeline.errors import UserError
from pipeline.tracking import TrialRun, finished_trial
from pipeline.train import EpochRecord
from pipeline.trial import EpochCallback, TrialResult, run_trial

TrialFunction = Callable[[TrialConfig, Splits, EpochCallback], TrialResult]
PROGRESS_KEYS = ("train/loss", "val/acc")
# MLflow credentials: a worker on another node runs with the environment of its `ray start`, not
# the driver's, so the driver's values travel to each trial with its other parameters (through
# the object store; Ray's runtime_env would write them into its agent's log on every node).
CREDENTIAL_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


@dataclass(frozen=True)
class TrackingTarget:
    """Where a trial logs: server URI, experiment, parent run, and params every child records."""

    uri: str
    experiment_id: str
    parent_run_id: str
    params: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    credentials: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Resources:
    """Resources of one trial by model family; GPUs go to torch trials only."""

    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0

    def for_model(self, model: str) -> dict[str, float]:
        """Ray's resource bundle for a trial of `model` (Ray's keys: CPU, GPU)."""
        if model.startswith("numpy_"):
            return {"CPU": 1.0}
        bundle = {"CPU": self.cpus_per_trial}
        if self.gpus_per_trial > 0:
            bundle["GPU"] = self.gpus_per_trial
        return bundle


def check_resources_fit(bundles: list[dict[str, float]]) -> None:
    """Fail now, in one line, if no node could ever run some trial (Tune would wait forever)."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    for bundle in bundles:
        if not any(all(node.get(k, 0.0) >= v for k, v in bundle.items()) for node in nodes):
            largest = max(nodes, key=lambda n: n.get("CPU", 0.0), default={})
            have = {k: largest.get(k, 0.0) for k in ("CPU", "GPU")}
            raise UserError(f"a trial asks for {bundle} but the largest Ray node has {have}; "
                            "expected --cpus-per-trial/--gpus-per-trial that fit a node")


@dataclass
class TrialOutcome:
    """How one trial ended, as Tune saw it."""

    name: str
    status: str  # TERMINATED or ERROR
    metrics: dict[str, Any]
    error: str | None = None


def _node_label() -> str:
    context = ray.get_runtime_context()
    return f"{context.get_node_id()[:12]}@{ray.util.get_node_ip_address()}"


def _train(config: dict[str, Any], data: Splits, plans: Mapping[str, TrialConfig],
           tracking: TrackingTarget, trial_fn: TrialFunction) -> None:
    """Ray Tune's function trainable: one trial, tracked in its own MLflow child run."""
    name = config["name"]
    trial_config = plans[name]
    os.environ.update(tracking.credentials)  # MlflowClient reads them from the environment
    client = MlflowClient(tracking.uri)
    done = finished_trial(client, tracking.experiment_id, tracking.parent_run_id, name)
    if done is not None:  # finished before the driver died; don't train or log it twice
        metrics = done.data.metrics
        tune.report({**_progress(metrics, int(done.data.params.get("epochs", 0)),
                                 done.data.tags.get("diverged") == "true"),
                     "test/acc": metrics.get("test/acc", float("nan")), "done": True})
        return
    run = TrialRun(client, tracking.experiment_id, tracking.parent_run_id, name,
                   params={**trial_config.model_dump(), **tracking.params},
                   tags={"study": trial_config.study, "seed": str(trial_config.seed),
                         "node": _node_label(), **tracking.tags})

    def on_epoch(record: EpochRecord) -> None:
        run.log_epoch(record.epoch, record.metrics)
        tune.report(_progress(record.metrics, record.epoch, record.diverged))

    try:
        result = trial_fn(trial_config, data, on_epoch)
        last_epoch = result.history[-1].epoch if result.history else 0
        run.log_epoch(last_epoch, {"test/acc": result.test_acc})
        run.set_tags({"diverged": str(result.diverged).lower()})
        with tempfile.TemporaryDirectory(prefix="medgrid-artifacts-") as tmp:
            write_trial_artifacts(result, name, Path(tmp))
            run.log_artifacts(Path(tmp))
        run.finish()
    except BaseException as error:
        run.fail(error)
        raise
    tune.report({**_progress(result.final_metrics, last_epoch, result.diverged),
                 "test/acc": result.test_acc, "done": True})


def _progress(metrics: Mapping[str, float], epoch: int, diverged: bool) -> dict[str, Any]:
    """What Tune sees of an epoch: enough for its status table (MLflow gets everything)."""
    shown = {k: metrics[k] for k in PROGRESS_KEYS if k in metrics}
    return {**shown, "epoch": epoch, "diverged": diverged}


class _TrialLines(tune.Callback):
    """One line per finished or failed trial, under Tune's status table."""

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        flag = "  DIVERGED" if result.get("diverged") else ""
        val, test = result.get("val/acc", float("nan")), result.get("test/acc", float("nan"))
        print(f"[medgrid] finished {trial.config['name']}: val/acc={val:.4f} "
              f"test/acc={test:.4f}{flag}", flush=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        print(f"[medgrid] FAILED {trial.config['name']} (attempt {trial.num_failures})",
              flush=True)


def build_trainable(data: Splits, plans: Mapping[str, TrialConfig], tracking: TrackingTarget,
                    resources: Resources, trial_fn: TrialFunction = run_trial) -> Any:
    """The trainable with shared objects put into the object store once, and its resources."""
    models = {name: config.model for name, config in plans.items()}
    check_resources_fit([resources.for_model(m) for m in set(models.values())])
    credentials = {name: os.environ[name] for name in CREDENTIAL_ENV if os.environ.get(name)}
    tracking = dataclasses.replace(tracking, credentials=credentials)
    trainable = tune.with_parameters(_train, data=data, plans=plans, tracking=tracking,
                                     trial_fn=trial_fn)

    def request(config: dict[str, Any]) -> tune.PlacementGroupFactory:
        return tune.PlacementGroupFactory([resources.for_model(models[config["name"]])])

    return tune.with_resources(trainable, request)


def init_ray(address: str | None, num_cpus: int | None = None) -> None:
    """Join the cluster at `address`, or start a local Ray."""
    if ray.is_initialized():
        return
    # MLflow prints a "View run at <url>" line per run; the private server's URL dies with the
    # sweep, so those lines would only mislead.
    runtime_env = {"env_vars": {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}}
    if address:
        ray.init(address=address, log_to_driver=True, runtime_env=runtime_env)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True,
                 runtime_env=runtime_env)


def launch(trainable: Any, names: list[str], storage: Path, experiment_name: str,
           max_concurrent: int | None, max_failures: int) -> list[TrialOutcome]:
    """Run a fresh sweep over `names` and return each trial's outcome."""
    tuner = tune.Tuner(
        trainable,
        param_space={"name": tune.grid_search(names)},
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent,
                                    trial_name_creator=_trial_name,
                                    trial_dirname_creator=_trial_dirname),
        run_config=_run_config(storage, experiment_name, max_failures),
    )
    return _outcomes(tuner.fit())


def _trial_name(trial: Any) -> str:
    return str(trial.config["name"])


def _trial_dirname(trial: Any) -> str:
    """A directory name without spaces or '=': the run name, made path-safe, plus Ray's id."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", str(trial.config["name"])).strip("_")
    return f"{safe}_{trial.trial_id}"


def restore(trainable: Any, experiment_path: str) -> list[TrialOutcome]:
    """Continue a sweep whose driver died: finished trials stay done, the rest run again."""
    tuner = tune.Tuner.restore(experiment_path, trainable=trainable, resume_unfinished=True,
                               resume_errored=False, restart_errored=True)
    return _outcomes(tuner.fit())


def can_restore(experiment_path: str) -> bool:
    """Whether Ray left a restorable experiment at `experiment_path`."""
    return bool(tune.Tuner.can_restore(experiment_path))


def _run_config(storage: Path, experiment_name: str, max_failures: int) -> tune.RunConfig:
    return tune.RunConfig(
        name=experiment_name,
        storage_path=str(storage.resolve()),
        failure_config=tune.FailureConfig(max_failures=max_failures),
        callbacks=[_TrialLines()],
        verbose=1,
    )


def _outcomes(results: Any) -> list[TrialOutcome]:
    outcomes = []
    for result in results:
        name = result.config.get("name", "?")
        error = f"{type(result.error).__name__}: {result.error}" if result.error else None
        status = "ERROR" if result.error else "TERMINATED"
        outcomes.append(TrialOutcome(name, status, dict(result.metrics or {}), error))
    return outcomes
