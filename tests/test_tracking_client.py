"""The tracking client (pipeline/tracking/client.py): what the rest of medgrid reads of a run
are plain records, MLflow's refusals arrive as `TrackingError`, and a store that is not there
is refused before anything is created."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.errors import UserError
from pipeline.tracking import names
from pipeline.tracking.client import TrackingClient, open_store, run_record
from pipeline.tracking.records import MetricPoint, RunRecord, TrackingError
from pipeline.tracking.server import free_port


def mlflow_run(**info: object) -> SimpleNamespace:
    """An object shaped like MLflow's `Run` (info + data), as its client returns it."""
    fields = {"run_id": "r1", "run_name": "q2_lr lr=0.1 seed=1", "experiment_id": 7,
              "status": "FINISHED", "start_time": 1000, "end_time": 5000,
              "artifact_uri": "file:///a", "lifecycle_stage": "active", **info}
    data = SimpleNamespace(params={"learning_rate": "0.1"},
                           tags={names.PARENT_TAG: "p1", names.STUDY_TAG: "q2_lr"},
                           metrics={names.VAL_ACC: 1})
    return SimpleNamespace(info=SimpleNamespace(**fields), data=data)


@pytest.mark.fast
@pytest.mark.parametrize(("info", "expected"), [
    ({}, {"experiment_id": "7", "active": True, "end_time": 5000, "name": "q2_lr lr=0.1 seed=1"}),
    ({"lifecycle_stage": "deleted"}, {"active": False}),
    ({"run_name": None, "artifact_uri": None, "end_time": None},
     {"name": "", "artifact_uri": "", "end_time": None}),
])
def test_a_run_is_read_as_a_plain_record(info: dict, expected: dict) -> None:
    record = run_record(mlflow_run(**info))
    assert isinstance(record, RunRecord)
    assert {k: getattr(record, k) for k in expected} == expected
    assert record.parent_id == "p1" and record.params == {"learning_rate": "0.1"}
    assert record.metrics == {names.VAL_ACC: 1.0} and isinstance(record.metrics[names.VAL_ACC],
                                                                  float)


@pytest.mark.fast
def test_a_missing_sqlite_store_is_refused_and_not_created(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    with pytest.raises(UserError, match="no such file"):
        open_store(f"sqlite:///{db}")
    assert not db.exists()


@pytest.mark.fast
def test_an_unreachable_server_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.tracking import server

    monkeypatch.setattr(server, "REMOTE_TIMEOUT_S", 0.5)
    with pytest.raises(UserError, match="unreachable"):
        open_store(f"http://127.0.0.1:{free_port()}")


def test_reads_return_records_and_refusals_are_tracking_errors(tmp_path: Path) -> None:
    client = TrackingClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("e", artifact_location=str(tmp_path / "art"))
    ids = []
    for epoch_loss in (0.5, 0.25):
        run_id = client.create_run(experiment, tags={names.KIND_TAG: names.TRIAL_KIND}).info.run_id
        client.log_metric(run_id, names.TRAIN_LOSS, epoch_loss, step=1)
        client.log_metric(run_id, names.TRAIN_LOSS, epoch_loss / 2, step=2)
        ids.append(run_id)
    query = f"tags.`{names.KIND_TAG}` = '{names.TRIAL_KIND}'"
    assert {r.run_id for r in client.find_runs([experiment], query)} == set(ids)
    [newest] = client.find_runs([experiment], query, limit=1, newest_first=True)
    assert newest.run_id == ids[-1] and newest.status == names.RUNNING
    assert client.metric_history(ids[0], names.TRAIN_LOSS) == [MetricPoint(1, 0.5),
                                                               MetricPoint(2, 0.25)]
    client.end_run(ids[0], names.KILLED)
    assert client.run(ids[0]).status == names.KILLED
    client.reopen_run(ids[0])
    assert client.run(ids[0]).status == names.RUNNING
    assert client.experiment_named("e").experiment_id == experiment
    assert client.experiment_named("nope") is None
    with pytest.raises(TrackingError):
        client.run("0" * 32)
