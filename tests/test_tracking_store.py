"""The local store as plain MLflow tools see it: artifacts of medgrid runs are listed and
downloaded by `MlflowClient("sqlite:///...")` and by a plain `mlflow server`, also for stores
written by medgrid 0.1 (proxied `mlflow-artifacts:/` URIs), once upgraded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.tracking import runs as tracking
from pipeline.tracking.server import LocalTrackingServer, free_port, wait_healthy
from pipeline.tracking.store import (
    absolute_sqlite,
    create_sqlite_schema,
    sqlite_path,
    store_in_place,
    upgrade_proxied_artifacts,
)


def _log_run(client: MlflowClient, experiment_id: str, directory: Path, kind: str | None) -> str:
    tags = {tracking.KIND_TAG: kind} if kind else {}
    run_id = client.create_run(experiment_id, tags=tags).info.run_id
    (directory / "history.csv").write_text("epoch,val/acc\n1,0.5\n")
    client.log_artifact(run_id, str(directory / "history.csv"))
    client.set_terminated(run_id)
    return run_id


def _plain_server_lists(db: Path, run_id: str, cwd: Path) -> list[str]:
    """`mlflow server` with no artifact flags, in the project directory, asked over REST."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                               f"sqlite:///{db}", "--host", "127.0.0.1", "--port", str(port),
                               "--workers", "1"], cwd=cwd, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_healthy(f"http://127.0.0.1:{port}", 60)
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/artifacts/list?run_id={run_id}"
        with urllib.request.urlopen(url, timeout=10) as response:
            files = json.load(response).get("files", [])
        get = f"http://127.0.0.1:{port}/get-artifact?path=history.csv&run_uuid={run_id}"
        with urllib.request.urlopen(get, timeout=10) as response:
            assert response.read().startswith(b"epoch,val/acc")
        return [f["path"] for f in files]
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_runs_logged_through_the_private_server_are_plain_files(tmp_path: Path,
                                                                monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with LocalTrackingServer("sqlite:///" + str(tmp_path / "mlflow.db"), tmp_path / "mlruns",
                             tmp_path / "server.log") as server:
        client = MlflowClient(server.url)
        experiment_id = tracking.ensure_experiment(client, "medgrid")
        run_id = _log_run(client, experiment_id, tmp_path, "trial")
    local = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert local.get_run(run_id).info.artifact_uri.startswith((tmp_path / "mlruns").as_uri())
    assert [a.path for a in local.list_artifacts(run_id)] == ["history.csv"]
    copy = local.download_artifacts(run_id, "history.csv", str(tmp_path))
    assert Path(copy).read_text().startswith("epoch,val/acc")
    assert _plain_server_lists(tmp_path / "mlflow.db", run_id, tmp_path) == ["history.csv"]
    experiment = local.get_experiment(experiment_id)
    assert experiment.tags[tracking.EXPERIMENT_KIND_TAG] == tracking.MODEL_TRAINING_KIND


def _proxied_store(tmp_path: Path) -> tuple[str, str]:
    """A store as medgrid 0.1 wrote it: a server proxying artifacts into ./mlruns."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                               f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts-destination",
                               str(tmp_path / "mlruns"), "--host", "127.0.0.1", "--port",
                               str(port), "--workers", "1"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_healthy(url, 60)
        client = MlflowClient(url)
        experiment_id = client.create_experiment("medgrid")
        ours = _log_run(client, experiment_id, tmp_path, "trial")
        foreign = _log_run(client, client.create_experiment("other"), tmp_path, None)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return ours, foreign


@pytest.mark.slow
def test_a_store_of_medgrid_0_1_is_upgraded_to_file_uris(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    ours, foreign = _proxied_store(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    local = MlflowClient(uri)
    assert local.get_run(ours).info.artifact_uri.startswith("mlflow-artifacts:/")
    assert not store_in_place(uri, tmp_path / "mlruns")  # the next sweep will rewrite rows
    assert upgrade_proxied_artifacts(uri, tmp_path / "mlruns") == 2  # the run, its experiment
    assert store_in_place(uri, tmp_path / "mlruns")  # what is left proxied is not medgrid's
    assert [a.path for a in local.list_artifacts(ours)] == ["history.csv"]
    # A run medgrid did not write keeps its URI: its files may live elsewhere.
    assert local.get_run(foreign).info.artifact_uri.startswith("mlflow-artifacts:/")
    assert upgrade_proxied_artifacts(uri, tmp_path / "mlruns") == 0  # idempotent


def test_a_store_is_in_place_only_when_serving_it_would_write_nothing(tmp_path: Path) -> None:
    db, artifacts = tmp_path / "mlflow.db", tmp_path / "mlruns"
    uri = f"sqlite:///{db}"
    assert not store_in_place(uri, artifacts)  # no database yet: the server would create it
    db.touch()
    assert not store_in_place(uri, artifacts)  # an empty file: MLflow's tables to create
    assert create_sqlite_schema(uri, artifacts)
    assert not store_in_place(uri, artifacts)  # the artifact directory to create
    artifacts.mkdir()
    assert store_in_place(uri, artifacts)
    assert not store_in_place("postgresql+psycopg2://u@h/db", artifacts)  # not a local store
    db.write_text("not a database " * 10)
    assert not store_in_place(uri, artifacts)  # left to the server's one-line check


def test_only_sqlite_stores_are_touched(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert absolute_sqlite("sqlite:///mlflow.db") == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert sqlite_path("postgresql+psycopg2://u@h/db") is None
    assert upgrade_proxied_artifacts("postgresql+psycopg2://u@h/db", tmp_path) == 0
    assert upgrade_proxied_artifacts("sqlite:///absent.db", tmp_path) == 0
    assert not (tmp_path / "absent.db").exists()  # reading never creates a store
