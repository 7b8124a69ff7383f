"""Everything medgrid writes to MLflow: the sweep's parent run, one child run per trial, per-epoch
metrics in batches, artifacts, and the cleanup of runs a killed process left RUNNING.

Only `MlflowClient` is used (no fluent, process-global active run), so one worker process can run
many trials one after another without state leaking between them.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline import liveness
from pipeline.errors import UserError
from pipeline.tracking.client import TrackingClient
from pipeline.tracking.names import (
    ATTEMPT_TAG,
    DRIVER_TAG,
    ERROR_TAG,
    EXPERIMENT_KIND_TAG,
    HEARTBEAT_TAG,
    KEY_TAG,
    KIND_TAG,
    MODEL_TRAINING_KIND,
    PARENT_TAG,
    PREVIOUS_ERROR_TAG,
    SWEEP_KIND,
    SWEEP_TAG,
    TRAIN_LOSS,
    TRIAL_KIND,
)
from pipeline.tracking.records import RunRecord

_MAX_PARAM_LEN = 6000


def trial_key(parent_run_id: str, trial_name: str) -> str:
    """Stable id of a trial within a sweep: the same across Ray retries and `--resume`."""
    return hashlib.sha256(f"{parent_run_id}/{trial_name}".encode()).hexdigest()[:16]


def _now_ms() -> int:
    return int(time.time() * 1000)


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The id of experiment `name`, created if missing (by the driver, before any trial)."""
    try:
        existing = client.get_experiment_by_name(name)
        if existing is not None:
            if existing.lifecycle_stage != "active":
                raise UserError(f"experiment '{name}' is deleted in {client.tracking_uri}; "
                                "expected an active experiment (restore it or pick another name)")
            if existing.tags.get(EXPERIMENT_KIND_TAG) is None:
                client.set_experiment_tag(existing.experiment_id, EXPERIMENT_KIND_TAG,
                                          MODEL_TRAINING_KIND)
            return str(existing.experiment_id)
        return str(client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND}))
    except MlflowException as exc:
        raise UserError(f"MLflow at {client.tracking_uri} refused experiment '{name}': "
                        f"{str(exc).splitlines()[0]}") from exc


def search_all(client: MlflowClient, experiment_id: str, filter_string: str) -> list[Any]:
    """All active runs that match, page by page, as MLflow's own objects: for this module's
    bookkeeping; other modules read records (`TrackingClient.find_runs`)."""
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=1000,
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def start_sweep_run(client: MlflowClient, experiment_id: str, sweep_name: str,
                    tags: Mapping[str, str], params: Mapping[str, Any]) -> str:
    """Create the parent run of a sweep and return its id.

    Named with its start time, so that two sweeps of one space can be told apart in the UI.
    """
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    run = client.create_run(experiment_id, run_name=f"sweep {sweep_name} {started}",
                            tags={KIND_TAG: SWEEP_KIND, SWEEP_TAG: sweep_name, **tags,
                                  **_driver_tags()})
    client.log_batch(run.info.run_id, params=_params(params))
    return str(run.info.run_id)


def _driver_tags() -> dict[str, str]:
    return {DRIVER_TAG: liveness.this_driver(), HEARTBEAT_TAG: f"{time.time():.0f}"}


def claim_sweep_run(client: MlflowClient, parent_run_id: str) -> None:
    """Name this process as the driver of `parent_run_id` (a resumed sweep's new driver)."""
    client.log_batch(parent_run_id, tags=[RunTag(k, v) for k, v in _driver_tags().items()])


def heartbeat(client: MlflowClient, parent_run_id: str) -> None:
    """Tell other sweeps sharing the store that this sweep's driver still runs."""
    client.set_tag(parent_run_id, HEARTBEAT_TAG, f"{time.time():.0f}")


def sweep_alive(tags: Mapping[str, str]) -> bool:
    """Whether the sweep whose parent run carries `tags` still has a live driver (liveness.py)."""
    return liveness.sweep_alive(tags.get(DRIVER_TAG), tags.get(HEARTBEAT_TAG))


def log_sweep_summary(client: MlflowClient, parent_run_id: str, metrics: Mapping[str, float],
                      tags: Mapping[str, str]) -> None:
    """The sweep's outcome on its parent run, so the runs view shows it before any expanding."""
    stamp = _now_ms()
    client.log_batch(parent_run_id,
                     metrics=[Metric(k, float(v), stamp, 0) for k, v in metrics.items()],
                     tags=[RunTag(k, str(v)[:_MAX_PARAM_LEN]) for k, v in tags.items()])


def latest_sweep_run(client: TrackingClient, experiment_id: str,
                     sweep_name: str) -> RunRecord | None:
    """The most recently started parent run of `sweep_name`, or None."""
    runs = client.find_runs(
        [experiment_id],
        f"tags.`{KIND_TAG}` = '{SWEEP_KIND}' AND tags.`{SWEEP_TAG}` = '{sweep_name}'",
        limit=1, newest_first=True,
    )
    return runs[0] if runs else None


def latest_sweep_experiment(client: MlflowClient) -> tuple[str, str] | None:
    """(id, name) of the experiment holding the most recently started sweep, if any."""
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    if not experiments:
        return None
    runs = client.search_runs(list(experiments), f"tags.`{KIND_TAG}` = 'sweep'", max_results=1,
                              order_by=["attributes.start_time DESC"])
    if not runs:
        return None
    experiment_id = str(runs[0].info.experiment_id)
    return experiment_id, experiments[experiment_id]


def close_stale_runs(client: MlflowClient, experiment_id: str, sweep_name: str,
                     keep_parent: str | None = None) -> int:
    """Mark runs of `sweep_name` still RUNNING whose sweep's driver is dead (killed) as KILLED;
    the runs of a sweep of the same space that is still running elsewhere are left alone.

    `keep_parent` is the sweep being resumed: its parent stays RUNNING, its children do not.
    """
    closed = 0
    parents = search_all(client, experiment_id,
                         f"tags.`{KIND_TAG}` = 'sweep' AND tags.`{SWEEP_TAG}` = '{sweep_name}'")
    for parent in parents:
        parent_id = parent.info.run_id
        if parent.info.status == "RUNNING" and sweep_alive(parent.data.tags):
            continue
        children = search_all(client, experiment_id,
                              f"tags.`{PARENT_TAG}` = '{parent_id}' AND attributes.status = "
                              "'RUNNING'")
        for run in children:
            client.set_terminated(run.info.run_id, "KILLED")
            closed += 1
        if parent_id != keep_parent and parent.info.status == "RUNNING":
            client.set_terminated(parent_id, "KILLED")
            closed += 1
    return closed


def sweep_children(client: TrackingClient, experiment_id: str, parent_run_id: str,
                   status: str | None = None) -> list[RunRecord]:
    """The child runs of one sweep (optionally only those with `status`)."""
    query = f"tags.`{PARENT_TAG}` = '{parent_run_id}'"
    if status is not None:
        query += f" AND attributes.status = '{status}'"
    return client.find_runs([experiment_id], query)


def close_interrupted_sweep(client: TrackingClient, experiment_id: str,
                            parent_run_id: str) -> tuple[int, int]:
    """End an interrupted sweep: its unfinished child runs and the parent KILLED (`--resume`
    reopens them). Returns (children FINISHED, children closed now)."""
    closed = 0
    for run in sweep_children(client, experiment_id, parent_run_id, "RUNNING"):
        client.set_terminated(run.run_id, "KILLED")
        closed += 1
    client.set_terminated(parent_run_id, "KILLED")
    finished = len(sweep_children(client, experiment_id, parent_run_id, "FINISHED"))
    return finished, closed


def find_trial_run(client: MlflowClient, experiment_id: str, parent_run_id: str,
                   name: str) -> str | None:
    """The run id of trial `name` in this sweep (any status), if it has one."""
    key = trial_key(parent_run_id, name)
    runs = client.search_runs([experiment_id], f"tags.`{KEY_TAG}` = '{key}'", max_results=1,
                              order_by=["attributes.start_time DESC"])
    return runs[0].info.run_id if runs else None


def finished_trial(client: TrackingClient, experiment_id: str, parent_run_id: str,
                   name: str) -> RunRecord | None:
    """The FINISHED child run of trial `name` in this sweep, if an earlier attempt completed.

    Ray saves its experiment state periodically; a driver killed between a trial's end and the
    next save would run that trial again on `--resume`. MLflow is the record that counts.
    """
    key = trial_key(parent_run_id, name)
    runs = client.find_runs([experiment_id],
                            f"tags.`{KEY_TAG}` = '{key}' AND attributes.status = 'FINISHED'",
                            limit=1)
    return runs[0] if runs else None


def _params(values: Mapping[str, Any]) -> list[Param]:
    return [Param(str(k), str(v)[:_MAX_PARAM_LEN]) for k, v in sorted(values.items())]


class TrialRun:
    """The child run of one trial.

    A trial that starts over (no checkpoint) replaces its earlier unfinished attempt (deleted,
    its error kept as a tag), so that MLflow shows exactly one child run per trial. A trial
    that continues from a checkpoint continues its own run (`TrialRun.resume`): epochs already
    logged are not logged again, so each epoch appears exactly once.
    """

    def __init__(self, client: MlflowClient, experiment_id: str, parent_run_id: str,
                 name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        self.client = client
        self.logged_through = 0  # the last epoch already in the run (a resumed run has some)
        key = trial_key(parent_run_id, name)
        earlier = search_all(client, experiment_id, f"tags.`{KEY_TAG}` = '{key}'")
        attempt = 1 + max((int(r.data.tags.get(ATTEMPT_TAG, "1")) for r in earlier),
                          default=0)
        attempt_tags = {ATTEMPT_TAG: str(attempt)}
        errors = [r.data.tags[ERROR_TAG] for r in earlier if ERROR_TAG in r.data.tags]
        if errors:
            attempt_tags[PREVIOUS_ERROR_TAG] = errors[-1][:_MAX_PARAM_LEN]
        for run in earlier:
            client.delete_run(run.info.run_id)
        run = client.create_run(experiment_id, run_name=name, tags={
            PARENT_TAG: parent_run_id, KIND_TAG: TRIAL_KIND, KEY_TAG: key, **tags, **attempt_tags,
        })
        self.run_id: str = run.info.run_id
        client.log_batch(self.run_id, params=_params(params))

    @classmethod
    def resume(cls, client: MlflowClient, run_id: str, tags: Mapping[str, str]) -> TrialRun:
        """Continue the run of a trial restored from a checkpoint: RUNNING again, one more
        attempt counted, and the epochs it already holds remembered so none is logged twice."""
        run = client.get_run(run_id)
        self = cls.__new__(cls)
        self.client, self.run_id = client, run_id
        history = client.get_metric_history(run_id, TRAIN_LOSS)
        self.logged_through = max((m.step for m in history), default=0)
        attempt = int(run.data.tags.get(ATTEMPT_TAG, "1")) + 1
        client.update_run(run_id, status="RUNNING")
        self.set_tags({**tags, ATTEMPT_TAG: str(attempt)})
        return self

    def log_epoch(self, step: int, metrics: Mapping[str, float], force: bool = False) -> None:
        """All of one epoch's metrics in one request (step = epoch); an epoch the run already
        holds (logged before a crash, then trained again from the checkpoint before it) is
        skipped unless `force`: training is deterministic, so it would be the same numbers."""
        if step <= self.logged_through and not force:
            return
        stamp = _now_ms()
        self.client.log_batch(self.run_id, metrics=[
            Metric(key, float(value), stamp, step) for key, value in metrics.items()
        ])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set several tags in one request."""
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifacts(self, directory: Path) -> None:
        """Upload every file under `directory` (over HTTP when the URI is a server)."""
        self.client.log_artifacts(self.run_id, str(directory))

    def finish(self) -> None:
        """End the run FINISHED."""
        self.client.set_terminated(self.run_id, RunStatus.to_string(RunStatus.FINISHED))

    def fail(self, error: BaseException) -> None:
        """End the run FAILED, with the error as a tag and the traceback as an artifact."""
        line = f"{type(error).__name__}: {error}".splitlines()[0]
        try:
            self.set_tags({ERROR_TAG: line[:_MAX_PARAM_LEN]})
            self.client.log_text(self.run_id, "".join(traceback.format_exception(error)),
                                 "error.txt")
        finally:
            self.client.set_terminated(self.run_id, RunStatus.to_string(RunStatus.FAILED))


def config_json(values: Mapping[str, Any]) -> str:
    """A canonical JSON text of a config (for hashing and tags)."""
    return json.dumps(values, sort_keys=True, default=str)
