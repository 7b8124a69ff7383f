"""`medgrid tune` beyond one machine, with real components: a two-node Ray cluster started with
`ray start`, an MLflow tracking server on PostgreSQL, and the faults a cluster meets: a node lost
mid-sweep, a server down at start or restarted mid-sweep, a server that asks for credentials.

Every sweep goes through the command line in a subprocess, as a user would run it.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import cluster_fixtures
import pytest
import yaml
from cluster_fixtures import (  # noqa: F401 - pytest finds the fixtures by name
    MlflowServer,
    RayCluster,
    database_fixture,
    ray_cluster_fixture,
    tracking_server_fixture,
)
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from pipeline.tracking.server import free_port

pytestmark = pytest.mark.cluster

# Two trials at once, one per node, each long enough (about 6 s: 40 epochs of ~0.14 s on
# `medium_npz`) for the other node's trial process to start meanwhile. A shorter trial ends
# before that, and Tune then reuses the first node's process for the other trial too (its actor
# reuse), so nothing would run on the second node.
QUICK_SPACE = """\
name: q1_logreg
model: numpy_logreg
seeds: [1, 2]
params: {epochs: 40, learning_rate: 0.01}
"""
QUICK_TRIALS = {f"q1_logreg seed={seed}" for seed in (1, 2)}
# Trials of about 3 s each (8 epochs of ~0.4 s on `medium_npz`): time to break something
# mid-trial.
SLOW_SPACE = """\
name: q1_mlp
model: numpy_mlp
params: {epochs: 8, hidden_size: 256, learning_rate: [0.01, 0.005, 0.002]}
"""
SLOW_TRIALS = {f"q1_mlp lr={lr} seed=42" for lr in (0.01, 0.005, 0.002)}
EPOCH_METRICS = ("train/loss", "train/acc", "val/loss", "val/acc", "epoch_time_s")
ARTIFACTS = {"curves.png", "confusion_matrix.csv", "confusion_matrix.png", "config.yaml",
             "weights.npz", "history.csv"}
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
T = TypeVar("T")


@pytest.fixture(scope="module")
def medium_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.synthetic import synthesize

    return synthesize(tmp_path_factory.mktemp("data") / "medium.npz", n_train=6000, n_val=300,
                      n_test=1000, seed=3)


@dataclass
class Sweep:
    """One `medgrid tune` run against the test cluster and a tracking server."""

    work: Path
    cluster: RayCluster
    url: str
    experiment: str
    extra_env: dict[str, str]

    def command(self, space_text: str, data: Path, *extra: str) -> list[str]:
        space = self.work / "space.yaml"
        space.write_text(space_text)
        return [sys.executable, "-m", "pipeline", "tune", str(space), "--data", str(data),
                "--ray-address", self.cluster.address, "--tracking-uri", self.url,
                "--experiment", self.experiment, "--storage", str(self.work / "ray_results"),
                "--max-failures", "1", *extra]

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if k not in CREDENTIALS}
        return {**base, **self.cluster.env, **self.extra_env}

    def run(self, space_text: str, data: Path, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(space_text, data), env=self.env(), cwd=self.work,
                              capture_output=True, text=True, timeout=timeout)

    def start(self, space_text: str, data: Path) -> subprocess.Popen:
        return subprocess.Popen(self.command(space_text, data), env=self.env(), cwd=self.work,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def trial_runs(client: MlflowClient, experiment: str,
               view: int = ViewType.ACTIVE_ONLY) -> list:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return list(client.search_runs([exp.experiment_id], "tags.`medgrid.kind` = 'trial'",
                                   run_view_type=view))


def wait_for(condition: Callable[[], T], process: subprocess.Popen, what: str,
             timeout: float = 180) -> T:
    """Poll `condition` while the sweep `process` runs; return its first truthy value."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if process.poll() is not None:
            pytest.fail(f"the sweep ended before {what}:\n{process.communicate()[0][-4000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
    return value


def assert_one_finished_run_per_trial(runs: list, names: set[str]) -> None:
    assert sorted(r.info.run_name for r in runs) == sorted(names)  # no duplicate, none missing
    assert {r.info.status for r in runs} == {"FINISHED"}  # no RUNNING orphan


def assert_every_epoch_reached_the_server(client: MlflowClient, run) -> None:
    epochs = int(run.data.params["epochs"])
    for key in EPOCH_METRICS:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert steps == list(range(1, epochs + 1)), (run.info.run_name, key, steps)
    assert 0.0 <= run.data.metrics["test/acc"] <= 1.0


def finish(process: subprocess.Popen, timeout: float = 240) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


# ------------------------------------------------------------- a sweep over two nodes
@pytest.fixture(scope="module")
def cluster_sweep(ray_cluster: RayCluster, tracking_server: MlflowServer, medium_npz: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sweep, list]]:
    sweep = Sweep(tmp_path_factory.mktemp("sweep"), ray_cluster, tracking_server.url,
                  "cluster", {})
    result = sweep.run(QUICK_SPACE, medium_npz)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    yield sweep, trial_runs(MlflowClient(tracking_server.url), "cluster")


def test_trials_ran_on_both_nodes(cluster_sweep, ray_cluster: RayCluster) -> None:
    _, runs = cluster_sweep
    assert_one_finished_run_per_trial(runs, QUICK_TRIALS)
    nodes = {r.data.tags["node"].split("@")[0] for r in runs}
    assert nodes == {node_id[:12] for node_id in (ray_cluster.head_id, *ray_cluster.worker_ids)}
    assert len(nodes) == 2


def test_every_metric_point_reached_the_server(cluster_sweep, tracking_server) -> None:
    _, runs = cluster_sweep
    client = MlflowClient(tracking_server.url)
    for run in runs:
        assert_every_epoch_reached_the_server(client, run)
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["ray_address"] == cluster_sweep[0].cluster.address


def test_artifacts_reach_the_server_byte_for_byte(cluster_sweep, tracking_server,
                                                  tmp_path: Path) -> None:
    _, runs = cluster_sweep
    client = MlflowClient(tracking_server.url)
    for run in runs:
        assert ARTIFACTS <= {a.path for a in client.list_artifacts(run.info.run_id)}
    run = runs[0]
    local = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path)))
    # The served artifact store keeps <experiment>/<run>/artifacts under --artifacts-destination.
    stored = tracking_server.artifacts / run.info.experiment_id / run.info.run_id / "artifacts"
    for name in ARTIFACTS:
        assert (local / name).read_bytes() == (stored / name).read_bytes(), name
    config = yaml.safe_load((local / "config.yaml").read_text())
    assert {k: str(v) for k, v in config.items()} == {k: run.data.params[k] for k in config}


def test_report_reads_the_sweep_from_the_server(cluster_sweep, tracking_server) -> None:
    sweep, _ = cluster_sweep
    out = sweep.work / "report"
    result = subprocess.run([sys.executable, "-m", "pipeline", "report", "--tracking-uri",
                             tracking_server.url, "--experiment", "cluster", "--out", str(out)],
                            env=sweep.env(), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = (out / "summary.csv").read_text().splitlines()
    assert len(summary) == 1 + len(QUICK_TRIALS)
    assert "q1_logreg" in (out / "report.md").read_text()


def test_missing_postgres_skips_on_a_laptop_and_fails_in_ci(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster_fixtures, "POSTGRES_URL",
                        f"postgresql://postgres@127.0.0.1:{free_port()}/test")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="unreachable"):
        cluster_fixtures.require_postgres()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="unreachable"):
        cluster_fixtures.require_postgres()


# --------------------------------------------------------------------------- faults
def test_unreachable_server_fails_fast_before_any_trial(ray_cluster: RayCluster, tiny_npz: Path,
                                                        tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    sweep = Sweep(tmp_path, ray_cluster, url, "unreachable", {})
    started = time.monotonic()
    result = sweep.run(QUICK_SPACE, tiny_npz, timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode == 2
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("medgrid: error: ") and url in errors[0]
    assert "Connecting to existing Ray cluster" not in result.stdout + result.stderr
    assert not (tmp_path / "ray_results").exists()  # Tune never started
    # The bound: `medgrid tune` checks the server before importing Ray or loading data
    # and gives up after 5 s, instead of waiting out MLflow's request retries (about 4 minutes).
    print(f"failed after {elapsed:.1f} s: {errors[0]}")
    assert elapsed < 10


def test_server_restart_mid_sweep_loses_no_metric_point(
        ray_cluster: RayCluster, tracking_server: MlflowServer, medium_npz: Path,
        tmp_path: Path) -> None:
    sweep = Sweep(tmp_path, ray_cluster, tracking_server.url, "restart", {})
    client = MlflowClient(tracking_server.url)
    process = sweep.start(SLOW_SPACE, medium_npz)
    try:
        wait_for(lambda: any("train/loss" in r.data.metrics
                             for r in trial_runs(client, "restart")), process, "a first epoch")
        down = int(time.time() * 1000)
        tracking_server.stop()  # a restart: requests in flight finish, then the port is closed
        time.sleep(3)
        assert process.poll() is None, "the sweep ended before the server came back"
        tracking_server.start()  # same port, same PostgreSQL database
        up = int(time.time() * 1000)
        output = finish(process)
    finally:
        if process.poll() is None:
            process.kill()
    runs = trial_runs(client, "restart")
    assert_one_finished_run_per_trial(runs, SLOW_TRIALS)
    stamps = []
    for run in runs:
        assert_every_epoch_reached_the_server(client, run)
        assert run.data.tags["medgrid.attempt"] == "1"  # bridged by retries, not by a rerun
        stamps += [m.timestamp for m in client.get_metric_history(run.info.run_id, "val/acc")]
    # Points measured while the server was down were kept and delivered after the restart.
    assert any(down <= stamp <= up for stamp in stamps), (down, up, sorted(stamps))
    assert "FAILED" not in output


def file_texts(directory: Path) -> dict[str, str]:
    """Every file under `directory`, as text (bytes kept one to one)."""
    return {str(p): p.read_bytes().decode("latin-1") for p in directory.rglob("*") if p.is_file()}


def basic_auth_server(database: str, directory: Path, password: str) -> MlflowServer:
    """A server with MLflow's basic-auth app; user `admin` with `password`, users in SQLite."""
    directory.mkdir()
    auth_ini = directory / "auth.ini"
    auth_ini.write_text("[mlflow]\ndefault_permission = READ\n"
                        f"database_uri = sqlite:///{directory / 'auth.db'}\n"
                        "admin_username = admin\n"
                        "authorization_function = mlflow.server.auth:"
                        "authenticate_request_basic_auth\n")
    return MlflowServer(database, directory, ["--app-name", "basic-auth"], {
        "MLFLOW_AUTH_CONFIG_PATH": str(auth_ini), "MLFLOW_AUTH_ADMIN_PASSWORD": password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)})


def test_basic_auth_server_gets_credentials_from_the_environment_only(
        ray_cluster: RayCluster, database: str, medium_npz: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    password = secrets.token_urlsafe(18)
    server = basic_auth_server(database, tmp_path / "server", password).start()
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{server.url}/api/2.0/mlflow/experiments/search"
                                   "?max_results=1", timeout=10)
        assert refused.value.code == 401
        credentials = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": password}
        sweep = Sweep(tmp_path / "work", ray_cluster, server.url, "auth", credentials)
        sweep.work.mkdir()
        result = sweep.run(QUICK_SPACE, medium_npz)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        for name, value in credentials.items():
            monkeypatch.setenv(name, value)  # for this test's own reading client
        client = MlflowClient(server.url)
        runs = trial_runs(client, "auth")
        assert_one_finished_run_per_trial(runs, QUICK_TRIALS)
        # Both nodes logged, though neither node's `ray start` had the credentials.
        assert len({r.data.tags["node"] for r in runs}) == 2
        parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
        seen = {"medgrid's output": result.stdout + result.stderr}
        for run in [parent, *runs]:
            for kind, values in (("param", run.data.params), ("tag", run.data.tags)):
                seen.update({f"{kind} {key} of {run.info.run_name}": value
                             for key, value in values.items()})
            got = tmp_path / "got" / run.info.run_id
            got.mkdir(parents=True)
            seen.update(file_texts(Path(client.download_artifacts(run.info.run_id, "", str(got)))))
        seen.update(file_texts(sweep.work / "ray_results"))
        seen.update(file_texts(ray_cluster.temp_dir))  # every node's Ray logs
        seen["the server's log"] = server.log_file.read_text(errors="replace")
        assert not [where for where, text in seen.items() if password in text]
    finally:
        server.stop()


def test_lost_node_trials_are_retried_on_the_other_node(
        ray_cluster: RayCluster, tracking_server: MlflowServer, medium_npz: Path,
        tmp_path: Path) -> None:
    # Runs last: it kills the cluster's worker node for good.
    sweep = Sweep(tmp_path, ray_cluster, tracking_server.url, "node-loss", {})
    client = MlflowClient(tracking_server.url)
    victim_node = ray_cluster.worker_ids[0]
    process = sweep.start(SLOW_SPACE, medium_npz)

    def running_on_victim() -> list:
        # Two epochs logged: the actor saved the checkpoint of epoch 1 before training epoch 2.
        return [r for r in trial_runs(client, "node-loss")
                if r.data.tags.get("node", "").startswith(victim_node[:12])
                and r.info.status == "RUNNING"
                and len(client.get_metric_history(r.info.run_id, "train/loss")) >= 2]

    try:
        killed = wait_for(running_on_victim, process, "a trial on the worker node")[0].info.run_name
        ray_cluster.kill_node(victim_node)
        finish(process)
    finally:
        if process.poll() is None:
            process.kill()
    runs = trial_runs(client, "node-loss")
    assert_one_finished_run_per_trial(runs, SLOW_TRIALS)
    retried = next(r for r in runs if r.info.run_name == killed)
    assert retried.data.tags["medgrid.attempt"] == "2"
    assert not retried.data.tags["node"].startswith(victim_node[:12])
    # It continued from its checkpoint (shared --storage) in the same run: each epoch once.
    assert_every_epoch_reached_the_server(client, retried)
    assert not [r for r in trial_runs(client, "node-loss", ViewType.DELETED_ONLY)
                if r.info.run_name == killed]

