"""The only module that knows Ray Tune: the search space and searcher, the scheduler, the
trainable (one epoch per step, checkpoints through Tune), resources, launching and restoring.

Tune's config of a trial carries the real hyperparameters (every `TrialConfig` field), so Tune's
searchers, schedulers and tables see them. A grid sweep hands Tune its planned trials as preset
points; a sampled sweep hands it distributions and a searcher (random or Optuna). Large shared
objects (the data, where to log) reach each trial once through Ray's object store
(`tune.with_parameters`); nothing assumes the driver's filesystem.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import signal
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.logger import JsonLoggerCallback
from ray.tune.schedulers import AsyncHyperBandScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from pipeline import process_session
from pipeline.artifacts import write_trial_files
from pipeline.config import Distribution, sampled_space
from pipeline.data import Splits
from pipeline.errors import UserError
from pipeline.figures import FigureQueue
from pipeline.interrupts import StopSignals
from pipeline.models import get_spec
from pipeline.plan import UNFINISHED, Resources, SweepPlan, TrialOutcome
from pipeline.progress import SweepProgress
from pipeline.tracking import names
from pipeline.tracking.client import TrackingClient
from pipeline.tracking.runs import TrialRun, finished_trial
from pipeline.trial import SessionFactory, TrialCheckpoint, TrialSession

RUN_NAME_KEY = "run_name"  # in every result a trial reports: its MLflow run name
PROGRESS_KEYS = (names.TRAIN_LOSS, names.VAL_ACC, names.VAL_LOSS, names.TRAIN_ACC)
RUN_ID_FILE = names.CHECKPOINT_RUN_FILE  # in each checkpoint: the run the trial continues
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


class RunNames:
    """Tune's trial_name_creator: each trial's readable name, made unique by a suffix (" #2")
    when two sampled trials round alike or a searcher repeats a config. Runs on the driver,
    which sees every trial; the trainable reads the result as its `trial_name`."""

    def __init__(self, plan: SweepPlan) -> None:
        self.plan = plan
        self.used: set[str] = set()

    def __call__(self, trial: Any) -> str:
        base = name = self.plan.trial_name(trial.config)
        copy = 1
        while name in self.used:
            copy += 1
            name = f"{base} #{copy}"
        self.used.add(name)
        return name


def check_resources_fit(resources: Resources, plan: SweepPlan) -> None:
    """Fail now, in one line, if no node could ever run some trial (Tune would wait forever).
    The driver asks before it creates the sweep's parent run, so a refusal leaves nothing."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    for bundle in [resources.for_model(m) for m in sorted(plan.models())]:
        if not any(all(node.get(k, 0.0) >= v for k, v in bundle.items()) for node in nodes):
            largest = max(nodes, key=lambda n: n.get("CPU", 0.0), default={})
            have = {k: largest.get(k, 0.0) for k in ("CPU", "GPU")}
            raise UserError(f"a trial asks for {bundle} but the largest Ray node has {have}; "
                            "expected --cpus-per-trial/--gpus-per-trial that fit a node")


def _node_label() -> str:
    context = ray.get_runtime_context()
    return f"{context.get_node_id()[:12]}@{ray.util.get_node_ip_address()}"


def _progress(metrics: Mapping[str, float], epoch: int, diverged: bool) -> dict[str, Any]:
    """What Tune sees of an epoch: the metrics searchers and schedulers use (MLflow gets all).
    A diverged epoch has no accuracy: NaN, which never beats a measured one."""
    shown = {k: float(metrics.get(k, math.nan)) for k in PROGRESS_KEYS}
    return {**shown, "epoch": epoch, "diverged": diverged}


class MedgridTrainable(tune.Trainable):
    """One trial as Tune's class trainable: `step` = one epoch, logged to the trial's MLflow
    child run; `save_checkpoint`/`load_checkpoint` = the learner's state and the run id, so a
    retried or resumed trial continues its own run after its last checkpoint; `cleanup` after
    a stop from outside (the scheduler) tests the model it has and logs it like any other."""

    def setup(self, config: dict[str, Any], data: Splits, plan: SweepPlan,
              target: TrackingTarget, make_session: SessionFactory) -> None:
        # Each finished trial's figures are drawn in the background while the next one trains
        # (matplotlib is imported there, on first use: not before this worker's first epoch).
        self.figures = FigureQueue()
        self.data, self.plan, self.target, self.make_session = data, plan, target, make_session
        os.environ.update(target.credentials)  # MlflowClient reads them from the environment
        # MLflow prints a "View run at <url>" line per run; the private server's URL dies with
        # the sweep, so those lines would only mislead.
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        self.client = TrackingClient(target.uri)
        self._begin(config)

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Tune reuses this actor (its process, imports and data) for the next trial: the
        previous trial is closed as `cleanup` would close it, then the new one begins (the
        previous trial's figures may still be drawing: they are not waited for here)."""
        self._end_trial()
        self._begin(new_config)
        return True

    def _begin(self, config: dict[str, Any]) -> None:
        """The per-trial state: everything `setup` does that depends on the trial's config."""
        self.trial_config = self.plan.trial_config(config)
        get_spec(self.trial_config.model).load_engine()  # once per worker: before the run
        self.also = self.plan.also(config)
        self.name = self.trial_name or self.plan.trial_name(config)  # Tune's, from RunNames
        self.session: TrialSession | None = None
        self.run: TrialRun | None = None
        self.closed = False
        self.stop_requested = False  # set by the scheduler (RecordingASHA) just before it stops us
        done = finished_trial(self.client, self.target.experiment_id,
                              self.target.parent_run_id, self.name)
        self.already_done = done  # finished before the driver died: don't train or log again

    def _tags(self) -> dict[str, str]:
        shared = {names.ALSO_TAG: json.dumps(self.also, sort_keys=True)} if self.also else {}
        return {names.STUDY_TAG: self.trial_config.study,
                names.SEED_TAG: str(self.trial_config.seed), names.NODE_TAG: _node_label(),
                **shared, **self.target.tags}

    def _start(self, checkpoint: TrialCheckpoint | None, run_id: str | None) -> None:
        """Open (or continue) the MLflow run first, so that a trial failing to build is a
        FAILED run with its error, then the trial session."""
        if run_id is not None:
            self.run = TrialRun.resume(self.client, run_id, self._tags())
        else:
            params = {**self.trial_config.model_dump(), **self.target.params}
            self.run = TrialRun(self.client, self.target.experiment_id,
                                self.target.parent_run_id, self.name, params, self._tags())
        self.session = self.make_session(self.trial_config, self.data, checkpoint)

    def step(self) -> dict[str, Any]:
        """Train one epoch, log it, and tell Tune (done after the last or a diverged epoch)."""
        if self.already_done is not None:
            return self._replay_finished()
        try:
            if self.run is None:
                self._start(None, None)
            assert self.session is not None and self.run is not None
            record = self.session.step()
            self.run.log_epoch(record.epoch, record.metrics)
            result = {**_progress(record.metrics, record.epoch, record.diverged),
                      RUN_NAME_KEY: self.name}
            if self.session.done:
                result.update(self._close(stopped=False), done=True)
            return result
        except (KeyboardInterrupt, SystemExit):
            raise  # the sweep is being stopped: the driver closes the run KILLED, --resume reopens
        except BaseException as error:
            self._fail(error)
            raise

    def _replay_finished(self) -> dict[str, Any]:
        done = self.already_done
        metrics = done.metrics
        result = _progress(metrics, int(done.params.get("epochs", 0)),
                           done.tags.get(names.DIVERGED_TAG) == "true")
        return {**result, names.TEST_ACC: metrics.get(names.TEST_ACC, math.nan),
                RUN_NAME_KEY: self.name, "done": True}

    def _close(self, stopped: bool) -> dict[str, Any]:
        """Test the model, upload the artifacts, end the run FINISHED; Tune's last numbers."""
        assert self.session is not None and self.run is not None
        result = self.session.finish()
        if not result.diverged:  # a diverged model's test accuracy is not measured: absent
            self.run.log_epoch(self.session.epoch, {names.TEST_ACC: result.test_acc}, force=True)
        tags = {names.DIVERGED_TAG: str(result.diverged).lower(),
                names.STOPPED_TAG: str(stopped).lower(),
                names.FIGURES_TAG: names.FIGURES_PENDING}  # until the figures are uploaded
        if stopped:
            tags[names.STOPPED_EPOCH_TAG] = str(self.session.epoch)
        self.run.set_tags(tags)
        with tempfile.TemporaryDirectory(prefix="medgrid-artifacts-") as tmp:
            write_trial_files(result, Path(tmp))
            self.run.log_artifacts(Path(tmp))
        self.run.finish()
        self.closed = True
        self.figures.submit(result, self.name, self.run)  # after Tune has the result
        return {names.TEST_ACC: result.test_acc}

    def _fail(self, error: BaseException) -> None:
        if self.run is not None and not self.closed:
            self.closed = True
            self.run.fail(error)

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        """The learner's state, the epochs so far, and the MLflow run to continue."""
        if self.session is None or self.run is None or self.session.result.diverged:
            return
        self.session.checkpoint().save(Path(checkpoint_dir))
        (Path(checkpoint_dir) / RUN_ID_FILE).write_text(json.dumps({"run_id": self.run.run_id}))

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        """Continue from a checkpoint (a retry after a crash, or `--resume`)."""
        directory = Path(checkpoint_dir)
        if self.already_done is not None:
            # Its run ended FINISHED after Ray's last state save (the driver died in between):
            # `step` replays the finished run; reopening it here would leave it RUNNING.
            return
        if not (directory / TrialCheckpoint.STATE_FILE).exists():
            return  # a trial checkpointed before its first epoch: start over
        checkpoint = TrialCheckpoint.load(directory)
        run_id = json.loads((directory / RUN_ID_FILE).read_text())["run_id"]
        try:
            self._start(checkpoint, run_id)
        except BaseException as error:
            self._fail(error)
            raise

    def mark_stopped_early(self) -> None:
        """Called by the driver's scheduler when it stops this trial (Ray runs one caller's
        actor tasks in order, so this arrives before `stop` or `reset`). The run is closed
        here, at once: a reused actor may wait a long while before Tune resets or stops it."""
        self.stop_requested = True
        self._end_trial()

    def cleanup(self) -> None:
        """The actor stops (Tune awaits this): the current trial is closed as `_end_trial`
        says, and the figures still being drawn are waited for."""
        try:
            self._end_trial()
        finally:
            self.figures.drain()

    def _end_trial(self) -> None:
        """A trial stopped early by the scheduler ends FINISHED with its test accuracy and
        artifacts, tagged with the epoch it reached. Any other stop from outside (the driver
        interrupted) leaves the run RUNNING: it is continued by `--resume` or closed KILLED."""
        if self.closed or self.session is None or self.already_done is not None:
            return
        if not self.stop_requested:
            return
        try:
            self._close(stopped=True)
        except BaseException as error:  # the actor is going away; leave the reason behind
            self._fail(error)


def to_tune(value: Any) -> Any:
    """A space value as Tune's: a Distribution -> tune.loguniform/uniform/randint/choice,
    a list -> grid_search, anything else as it is."""
    if isinstance(value, Distribution):
        if value.kind == "choice":
            return tune.choice(list(value.values))
        return {"loguniform": tune.loguniform, "uniform": tune.uniform,
                "randint": tune.randint}[value.kind](value.low, value.high)
    if isinstance(value, list):
        return tune.grid_search(value)
    return value


def param_space(plan: SweepPlan) -> dict[str, Any]:
    """Tune's param_space: every key of the grid points (their values come from the points),
    or the sampled study's fixed values and distributions."""
    if plan.study is not None:
        return {k: to_tune(v) for k, v in sampled_space(plan.study).items()}
    keys = dict.fromkeys(k for point in plan.points for k in point)
    return dict.fromkeys(keys)


def searcher(plan: SweepPlan) -> Any:
    """Preset points for a grid; Tune's seeded random search; or Optuna through Tune."""
    search = plan.search
    if plan.study is None:
        return BasicVariantGenerator(points_to_evaluate=[dict(p) for p in plan.points])
    if search.algorithm == "random":
        return BasicVariantGenerator(random_state=search.seed)
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created in memory"
    return OptunaSearch(seed=search.seed)


class RecordingASHA(AsyncHyperBandScheduler):
    """ASHA that tells a trial it stops early before Tune stops it, so the trial can end
    FINISHED (`stopped_early`) rather than look interrupted."""

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        actor = trial.temporary_state.ray_actor
        if decision == self.STOP and not result.get("done") and actor is not None:
            actor.mark_stopped_early.remote()
        return decision


def scheduler(plan: SweepPlan) -> RecordingASHA | None:
    """The sweep's ASHA scheduler (on the search metric), or None (run every trial to its end)."""
    asha = plan.scheduler
    if asha is None:
        return None
    return RecordingASHA(time_attr="epoch", grace_period=asha.grace_period,
                         reduction_factor=asha.reduction_factor, max_t=asha.max_t or 1)


def _stopped_early(config: Mapping[str, Any], result: Mapping[str, Any]) -> bool:
    """A trial that ended before its last epoch without diverging was stopped by the scheduler."""
    epochs = config.get("epochs")
    return (isinstance(epochs, int) and int(result.get("epoch", epochs)) < epochs
            and not result.get("diverged"))


def _cause(trial: Any) -> str:
    """The trial's error in one line: the original exception, not Ray's wrapper around it.
    Tune has just written it to the trial's local error file (MLflow has the traceback)."""
    error = None
    path = trial.pickled_error_file
    if path and Path(path).is_file():
        try:
            error = ray.cloudpickle.loads(Path(path).read_bytes())
        except Exception:  # a best-effort line; never let it break the sweep
            error = None
    if error is None:
        return "see its error.txt in MLflow"
    if isinstance(error, ray.exceptions.RayActorError):
        return "its process died (killed, out of memory, or its node was lost)"
    cause = getattr(error, "cause", None) or error
    lines = [line for line in str(cause).strip().splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[-1][:200]}" if lines else type(cause).__name__


class _ProgressLines(tune.Callback):
    """Tune's events, handed to medgrid's progress lines."""

    def __init__(self, plan: SweepPlan, progress: SweepProgress) -> None:
        self.plan, self.progress = plan, progress

    def _name(self, trial: Any) -> str:
        try:
            return str(trial)
        except (UserError, KeyError, ValueError):
            return str(trial.trial_id)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        resumed = (trial.last_result or {}).get("epoch", 0) if trial.checkpoint else 0
        self.progress.trial_started(self._name(trial), int(resumed or 0))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = dict(trial.last_result or {})
        result["stopped_early"] = _stopped_early(trial.config, result)
        self.progress.trial_ended(self._name(trial), result)

    def _error(self, trial: Any, will_retry: bool) -> None:
        self.progress.trial_failed(self._name(trial), trial.num_failures, _cause(trial),
                                   will_retry)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._error(trial, will_retry=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._error(trial, will_retry=False)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.progress.tick(pending=sum(t.status == "PENDING" for t in trials))


def build_trainable(data: Splits, plan: SweepPlan, target: TrackingTarget,
                    resources: Resources, make_session: SessionFactory = TrialSession) -> Any:
    """The trainable with shared objects put into the object store once, and its resources."""
    credentials = {name: os.environ[name] for name in CREDENTIAL_ENV if os.environ.get(name)}
    target = dataclasses.replace(target, credentials=credentials)
    trainable = tune.with_parameters(MedgridTrainable, data=data, plan=plan, target=target,
                                     make_session=make_session)

    def request(config: dict[str, Any]) -> tune.PlacementGroupFactory:
        return tune.PlacementGroupFactory([resources.for_model(str(config["model"]))])

    return tune.with_resources(trainable, request)


def init_ray(address: str | None, num_cpus: int | None = None, verbose: bool = False) -> bool:
    """Join the cluster at `address`, or start a local Ray; Ray's own chatter only if verbose.
    False if this process was already connected to a Ray (then it is not ours to shut down)."""
    if ray.is_initialized():
        return False
    # SIGINT is the driver's (interrupts.StopSignals), which asks Tune to stop through Tune's
    # SIGUSR1 handler; Tune's own SIGINT handler would hide the signal from the driver.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    if not verbose:  # Ray's start-up notes and warnings meant for Ray's own operators
        # (the token warning only says that Ray's default, token authentication, is on)
        for name in ("ray", "ray.train", "ray.air", "ray._private.worker",
                     "ray._private.authentication.authentication_token_setup"):
            logging.getLogger(name).setLevel(logging.ERROR)
        # A failing trial is one progress line (and error.txt in MLflow), not Tune's traceback.
        logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    if not verbose:
        # Ray's newer console output prints its experiment box even at verbose=0; the classic
        # reporter is silent there, leaving the terminal to medgrid's progress lines.
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    # Keeping one checkpoint per trial makes Tune snapshot its experiment state after each one
    # (so the state never names a deleted checkpoint); the snapshot is small, the warning noise.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune adds CSV and TensorBoard loggers of every result by default; MLflow has every metric,
    # and the TensorBoard one imports torch into the driver (a second of CPU as Tune starts).
    # Its JSON log stays (`_run_config`).
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    # No job-wide runtime_env: Ray would start fresh workers for it and leave the ones it
    # started (and preloaded) with the node idle. What a trial needs in its environment it
    # sets itself (MedgridTrainable.setup).
    if address:
        try:
            ray.init(address=address, log_to_driver=verbose)
        except ConnectionError as error:  # e.g. "auto" with no `ray start` cluster here
            reason = str(error).splitlines()[0].rstrip(".")
            raise UserError(f"Ray cluster at {address}: {reason}; expected a running cluster, "
                            "or --ray-address local") from None
    else:
        # "local": always a Ray of this sweep's own. Left unset, Ray would join whatever Ray
        # `ray start` last left on this machine (/tmp/ray/ray_current_cluster).
        with _loopback_only(), _without_unused_helpers(verbose):
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                     log_to_driver=verbose, _system_config=_NO_IDLE_WORKERS)
    return True


# Ray starts one idle worker per CPU with the node (and again when the driver connects), but
# Tune's trial actors carry a runtime_env of Tune's own (ray.tune.execution.class_cache), so
# they never take those workers: on 2 CPUs that was 2 processes importing Ray for nothing,
# competing with the start of the real ones (the first trial started 4 s later).
_NO_IDLE_WORKERS = {"enable_worker_prestart": False, "prestart_worker_first_driver": False}


@contextmanager
def _loopback_only() -> Iterator[None]:
    """A local Ray whose every port (GCS, raylet, object manager, workers, runtime-env agent)
    listens on 127.0.0.1 only.

    Ray binds its servers to all interfaces unless the node's IP is 127.0.0.1, and on Linux it
    turns a requested 127.0.0.1 into the machine's external address (`resolve_ip_for_localhost`)
    so that other nodes could join. It keeps the node on loopback only where clusters are off
    (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, read once at import into this constant). A sweep's
    own Ray never takes other nodes, so it is started with clusters off; the constant is put
    back afterwards, for a later `--ray-address` sweep in the same process."""
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


@contextmanager
def _without_unused_helpers(verbose: bool) -> Iterator[None]:
    """A local Ray without three head processes a sweep's own Ray never uses: the autoscaler's
    monitor (one node, which never scales), the API server (`dashboard.py`: with the dashboard
    off it serves only Ray's usage statistics, and `ray.init` waits for it to come up) and,
    unless the workers' output is shown (`--verbose`, `log_to_driver`), the log monitor that
    streams it to the driver. Each is a Python process importing Ray while the sweep starts:
    together about 1.5 s of CPU that the 2-core machine otherwise takes from the private
    server's and the trials' start, and the API server about 0.6 s of `ray.init` itself.

    `ray start` has `--no-monitor`; `ray.init` has no argument for any of them, so its node
    parameters (`RayParams`) get the two settings, and the node's API-server start is skipped,
    while it runs. A Ray whose parameters lack the settings ignores them and starts those
    processes as before."""
    from ray._private import node, parameter

    original_params = parameter.RayParams.__init__
    original_api_server = node.Node.start_api_server

    def without_helpers(params: Any, *args: Any, **kwargs: Any) -> None:
        original_params(params, *args, **kwargs)
        params.no_monitor = True
        if not verbose:
            params.include_log_monitor = False

    def no_api_server(self: Any, **kwargs: Any) -> None:
        """Ray records no dashboard URL then, as on an install without the dashboard."""

    parameter.RayParams.__init__ = without_helpers  # type: ignore[method-assign]
    node.Node.start_api_server = no_api_server  # type: ignore[method-assign]
    try:
        yield
    finally:
        parameter.RayParams.__init__ = original_params  # type: ignore[method-assign]
        node.Node.start_api_server = original_api_server  # type: ignore[method-assign]


# How long a local Ray's workers get to exit after `ray.shutdown` before they are killed: a
# worker finishing a trial's last writes, or its interpreter's exit (torch, MLflow and
# matplotlib loaded), takes a second or two on a busy machine.
WORKER_EXIT_GRACE_S = 10.0


def shutdown_ray() -> None:
    """Disconnect from Ray; a local Ray's processes (GCS, raylet, workers) end with it, and
    are awaited: `ray.shutdown` kills the head's processes but returns while their workers are
    still exiting, and a sweep that returned with a worker of it alive would leave it writing
    beside the next command (a `--resume`, a report) or outliving a batch job's end."""
    node = ray._private.worker._global_node  # None when this process never connected
    head = [info.process.pid for infos in getattr(node, "all_processes", {}).values()
            for info in infos if info.process is not None]  # empty for a cluster's driver
    local_processes = process_session.process_tree(head)
    ray.shutdown()
    process_session.await_exit(local_processes, WORKER_EXIT_GRACE_S)


@contextmanager
def _stoppable(stops: StopSignals | None) -> Iterator[None]:
    """While Tune runs, the driver's first SIGINT/SIGTERM becomes Tune's graceful stop: Tune
    saves its experiment state, stops the trials (killing any still busy after 5 s) and
    returns. Tune installs that stop as its SIGUSR1 handler when its loop starts; before that
    there is nothing to stop gracefully and the signal unwinds the driver."""
    if stops is None:
        yield
        return
    before = signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # not an earlier Tune's handler

    def ask_tune() -> bool:
        handler = signal.getsignal(signal.SIGUSR1)
        if not callable(handler):
            return False
        handler(signal.SIGUSR1, None)
        return True

    stops.graceful = ask_tune
    try:
        yield
    finally:
        stops.graceful = None
        signal.signal(signal.SIGUSR1, before)


@dataclass(frozen=True)
class LaunchOptions:
    """How Tune runs the sweep, beyond the plan."""

    storage: Path
    experiment_name: str
    max_concurrent: int | None = None
    max_failures: int = 1
    verbose: bool = False


def launch(trainable: Any, plan: SweepPlan, options: LaunchOptions,
           stops: StopSignals | None = None) -> list[TrialOutcome]:
    """Run a fresh sweep and return each trial's outcome (stopped early by `stops`)."""
    tune_config = tune.TuneConfig(
        search_alg=searcher(plan), scheduler=scheduler(plan), num_samples=plan.n_trials,
        metric=plan.search.metric, mode=plan.search.mode,
        max_concurrent_trials=options.max_concurrent, reuse_actors=True,
        trial_name_creator=RunNames(plan),
        trial_dirname_creator=lambda t: _trial_dirname(plan, t))
    tuner = tune.Tuner(trainable, param_space=param_space(plan), tune_config=tune_config,
                       run_config=_run_config(plan, options))
    with _stoppable(stops):
        results = tuner.fit()
    return _outcomes(results, plan)


def _trial_dirname(plan: SweepPlan, trial: Any) -> str:
    """A directory name without spaces or '=': the run name, made path-safe, plus Ray's id."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", plan.trial_name(trial.config))
    return f"{safe.strip('_')[:80]}_{trial.trial_id}"


def restore(trainable: Any, plan: SweepPlan, experiment_path: str,
            options: LaunchOptions, stops: StopSignals | None = None) -> list[TrialOutcome]:
    """Continue a sweep whose driver died: finished trials stay done, unfinished ones continue
    from their last checkpoint, and a searcher's state (what it sampled) is restored.

    Tune does not keep the param space with its saved state, so it is given again here: a
    restore Tune gives up on (it then starts the experiment over, with one sample) draws a real
    config rather than an empty one, and the driver's trial count refuses the result. A state
    file cut short by a kill is caught before this is called (`unreadable_state`)."""
    tuner = tune.Tuner.restore(experiment_path, trainable=trainable, resume_unfinished=True,
                               resume_errored=True, restart_errored=False,
                               param_space=param_space(plan))
    with _stoppable(stops):
        results = tuner.fit()
    return _outcomes(results, plan)


def unreadable_state(experiment_path: str) -> str | None:
    """Why Tune's newest saved state of the sweep at `experiment_path` cannot be read, or None.

    Tune writes `experiment_state-*.json` in place, so a driver killed while writing it leaves
    the file cut short; Tune then gives up restoring and starts the experiment again."""
    states = sorted(Path(experiment_path).glob("experiment_state-*.json"))
    if not states:
        return None
    try:
        json.loads(states[-1].read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return f"{states[-1].name}: {type(error).__name__}: {str(error).splitlines()[0]}"
    return None


def can_restore(experiment_path: str) -> bool:
    """Whether Ray left a restorable experiment at `experiment_path`."""
    return bool(tune.Tuner.can_restore(experiment_path))


def _run_config(plan: SweepPlan, options: LaunchOptions) -> tune.RunConfig:
    progress = SweepProgress(plan.n_trials)
    # Tune's own per-trial result log (result.json), which Tune's analysis tools read; its
    # other default loggers are off (`init_ray`).
    callbacks: list[Any] = [JsonLoggerCallback()]
    if not options.verbose:
        callbacks.append(_ProgressLines(plan, progress))
    return tune.RunConfig(
        name=options.experiment_name,
        storage_path=str(options.storage.resolve()),
        failure_config=tune.FailureConfig(max_failures=options.max_failures),
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=1, checkpoint_frequency=plan.checkpoint_every),
        callbacks=callbacks,
        verbose=2 if options.verbose else 0,
    )


def _outcomes(results: Any, plan: SweepPlan) -> list[TrialOutcome]:
    outcomes = []
    for result in results:
        metrics = dict(result.metrics or {})
        config = dict(result.config or {})  # None for a trial that never started
        name = metrics.get(RUN_NAME_KEY)
        if not name:  # failed before its first result
            try:
                name = plan.trial_name(config)
            except (UserError, KeyError, ValueError):
                name = metrics.get("trial_id") or "?"
        error = f"{type(result.error).__name__}: {result.error}" if result.error else None
        status = "ERROR" if error else "TERMINATED" if metrics else UNFINISHED
        outcomes.append(TrialOutcome(str(name), status, metrics, error,
                                     not error and _stopped_early(config, metrics)))
    return outcomes
