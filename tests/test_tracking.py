"""Tracking under concurrency and after a killed driver: no metric point lost, no duplicate
or orphaned RUNNING child runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
from conftest import trial_runs
from mlflow.tracking import MlflowClient

from pipeline.tracking import runs as tracking
from pipeline.tracking.server import LocalTrackingServer

pytestmark = pytest.mark.slow


@ray.remote(num_cpus=0.25)
def _log_points(uri: str, experiment_id: str, parent_id: str, index: int, points: int) -> str:
    run = tracking.TrialRun(MlflowClient(uri), experiment_id, parent_id, f"writer {index}",
                            params={"index": index}, tags={})
    for step in range(1, points + 1):
        run.log_epoch(step, {"val/acc": step / points})
    run.finish()
    return run.run_id


@pytest.mark.usefixtures("local_ray")
def test_eight_concurrent_trials_lose_no_metric_point(tmp_path: Path) -> None:
    with LocalTrackingServer(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "mlruns",
                             tmp_path / "server.log") as server:
        client = MlflowClient(server.url)
        experiment_id = tracking.ensure_experiment(client, "concurrency")
        parent = tracking.start_sweep_run(client, experiment_id, "c", {}, {})
        run_ids = ray.get([_log_points.remote(server.url, experiment_id, parent, i, 200)
                           for i in range(8)])
        points = [len(client.get_metric_history(r, "val/acc")) for r in run_ids]
    assert points == [200] * 8 and sum(points) == 1600


SLOW_SPACE = """\
name: slow
model: numpy_mlp
params: {epochs: 6, hidden_size: 100, learning_rate: [0.01, 0.005, 0.002, 0.001, 0.0005, 0.0002]}
"""


@pytest.fixture(scope="module")
def medium_npz(tmp_path_factory) -> Path:
    """Enough data that each trial takes a couple of seconds: time to kill the driver."""
    from pipeline.synthetic import synthesize

    return synthesize(tmp_path_factory.mktemp("data") / "medium.npz", n_train=4000, n_val=400,
                      n_test=1000, seed=3)


def _tune(work: Path, space: Path, data: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "pipeline", "tune", str(space), "--data", str(data),
               "--num-cpus", "1", "--max-concurrent", "1", *extra]
    return subprocess.Popen(command, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def test_resume_after_sigkill_runs_only_unfinished_trials(tmp_path: Path,
                                                          medium_npz: Path) -> None:
    space = tmp_path / "slow.yaml"
    space.write_text(SLOW_SPACE)
    db = tmp_path / "mlflow.db"
    driver = _tune(tmp_path, space, medium_npz)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and driver.poll() is None:
        if sum(r.info.status == "FINISHED" for r in trial_runs(db)) >= 2:
            break
        time.sleep(0.5)
    assert driver.poll() is None, "the sweep ended before it could be killed:\n" + \
        (driver.stdout.read() if driver.stdout else "")
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    before = {r.info.run_name: r for r in trial_runs(db) if r.info.status == "FINISHED"}
    assert 2 <= len(before) < 6

    resumed = _tune(tmp_path, space, medium_npz, "--resume")
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    after = trial_runs(db)
    assert len(after) == 6, "one child run per trial, no duplicates"
    assert {r.info.status for r in after} == {"FINISHED"}
    for run in after:  # finished trials were not run again: same run, same start time
        if run.info.run_name in before:
            assert run.info.run_id == before[run.info.run_name].info.run_id
    parents = {r.data.tags["mlflow.parentRunId"] for r in after}
    assert len(parents) == 1
