"""`medgrid ui`: MLflow's UI over the project's store, on loopback, opened at the latest sweep's
runs, stopped cleanly by Ctrl-C or kill. Runs the real command and the real MLflow UI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.tracking.runs import KIND_TAG
from pipeline.tracking.server import free_port

LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp*


def listening_addresses(port: int) -> set[str]:
    """The local addresses (hex, as the kernel writes them) listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == LISTEN:
                found.add(address)
    return found


def processes_naming(port: int) -> list[int]:
    """Live processes whose command line holds `--port <port>` (the UI and its workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        pairs = zip(argv, argv[1:], strict=False)
        if any(a == b"--port" and b == str(port).encode() for a, b in pairs):
            pids.append(int(entry.name))
    return pids


STOPS = {
    "Ctrl-C in its terminal": lambda pid: os.killpg(pid, signal.SIGINT),  # the whole group
    "kill (SIGTERM) to medgrid alone": lambda pid: os.kill(pid, signal.SIGTERM),
}


@pytest.mark.parametrize("stop", STOPS)
def test_ui_opens_on_the_latest_sweeps_runs_on_loopback_and_stops_cleanly(
        stop: str, tmp_path: Path) -> None:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_experiment("scratch")
    demo = client.create_experiment("medgrid-demo")
    sweep = client.create_run(demo, tags={KIND_TAG: "sweep"}, run_name="sweep hw1")
    client.set_terminated(sweep.info.run_id)
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "pipeline", "ui", "--port", str(port)],
                          cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True)
    try:
        first = ui.stdout.readline().strip()  # printed once the UI answers
        assert first == (f"MLflow UI: http://127.0.0.1:{port}/#/experiments/{demo}/runs"
                         "?workflowType=machine_learning")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as answer:
            assert answer.status == 200
        assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1 only
        STOPS[stop](ui.pid)
        assert ui.wait(timeout=60) == 0
        assert "Traceback" not in ui.stderr.read()
        assert processes_naming(port) == [] and listening_addresses(port) == set()
    finally:
        for pid in [ui.pid, *processes_naming(port)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
