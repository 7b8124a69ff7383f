"""Two sweeps of one space sharing a store (issue 14, item 10): a new sweep closes as KILLED only
the runs of sweeps whose driver is dead, never those of a sweep still running."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline import liveness
from pipeline.tracking import names
from pipeline.tracking import runs as tracking


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _driver(host: str, pid: int, started: str | None) -> str:
    return json.dumps({"host": host, "pid": pid, "started": started})


HERE = socket.gethostname()
ME = _driver(HERE, os.getpid(), liveness.process_start(os.getpid()))


@pytest.mark.fast
def test_sweep_alive_on_this_host_asks_proc() -> None:
    assert liveness.sweep_alive(ME, heartbeat=None)
    assert not liveness.sweep_alive(_driver(HERE, _dead_pid(), "123"), heartbeat=str(time.time()))
    # The pid is alive, but it is another process than the driver that took it (pid reuse).
    assert not liveness.sweep_alive(_driver(HERE, os.getpid(), "1"), heartbeat=None)


@pytest.mark.fast
def test_sweep_alive_on_another_host_reads_the_heartbeat() -> None:
    other = _driver("some-other-host", 4242, "99")
    now = 1_000_000.0
    assert liveness.sweep_alive(other, str(now - 10), now=now)
    assert not liveness.sweep_alive(other, str(now - liveness.STALE_AFTER_S), now=now)
    assert not liveness.sweep_alive(other, None, now=now)


@pytest.mark.fast
def test_a_parent_without_driver_tags_counts_as_dead() -> None:
    """Runs an older medgrid left RUNNING are closed, as they always were."""
    assert not liveness.sweep_alive(None, None)
    assert not liveness.sweep_alive("not json", "nan?")


@pytest.mark.fast
def test_heartbeat_beats_until_closed_and_survives_a_failing_beat() -> None:
    beats: list[float] = []

    def beat() -> None:
        beats.append(time.monotonic())
        if len(beats) == 1:
            raise ConnectionError("store briefly down")

    with liveness.Heartbeat(beat, every_s=0.01):
        while len(beats) < 3:
            time.sleep(0.01)
    after = len(beats)
    time.sleep(0.05)
    assert len(beats) == after  # stopped with the context
    assert not any(t.name == "medgrid-heartbeat" for t in threading.enumerate())


def _sweep(client: MlflowClient, experiment_id: str, tags: dict[str, str]) -> tuple[str, str]:
    """A parent run of sweep 'same' with `tags`, and one RUNNING trial under it."""
    parent = client.create_run(experiment_id, tags={names.KIND_TAG: "sweep",
                                                    names.SWEEP_TAG: "same", **tags})
    child = client.create_run(experiment_id, tags={names.KIND_TAG: "trial",
                                                   names.PARENT_TAG: parent.info.run_id})
    return parent.info.run_id, child.info.run_id


def test_close_stale_runs_leaves_live_sweeps_alone(tmp_path: Path) -> None:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("medgrid")
    fresh, stale = f"{time.time():.0f}", f"{time.time() - 3600:.0f}"
    sweeps = {
        "live here": _sweep(client, experiment_id, {names.DRIVER_TAG: ME}),
        "live elsewhere": _sweep(client, experiment_id, {
            names.DRIVER_TAG: _driver("other-host", 7, "1"), names.HEARTBEAT_TAG: fresh}),
        "killed here": _sweep(client, experiment_id, {
            names.DRIVER_TAG: _driver(HERE, _dead_pid(), "5"), names.HEARTBEAT_TAG: fresh}),
        "silent elsewhere": _sweep(client, experiment_id, {
            names.DRIVER_TAG: _driver("other-host", 7, "1"), names.HEARTBEAT_TAG: stale}),
        "older medgrid": _sweep(client, experiment_id, {}),
    }
    assert tracking.close_stale_runs(client, experiment_id, "same") == 6
    status = {name: tuple(client.get_run(run).info.status for run in runs)
              for name, runs in sweeps.items()}
    assert status == {"live here": ("RUNNING", "RUNNING"),
                      "live elsewhere": ("RUNNING", "RUNNING"),
                      "killed here": ("KILLED", "KILLED"),
                      "silent elsewhere": ("KILLED", "KILLED"),
                      "older medgrid": ("KILLED", "KILLED")}


def test_a_new_parent_names_its_driver_and_a_claim_takes_it_over(tmp_path: Path) -> None:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("medgrid")
    parent_id = tracking.start_sweep_run(client, experiment_id, "same", {}, {})
    assert tracking.sweep_alive(client.get_run(parent_id).data.tags)
    client.set_tag(parent_id, names.DRIVER_TAG, _driver(HERE, _dead_pid(), "5"))
    assert not tracking.sweep_alive(client.get_run(parent_id).data.tags)
    tracking.claim_sweep_run(client, parent_id)  # as `--resume` does
    assert tracking.sweep_alive(client.get_run(parent_id).data.tags)
