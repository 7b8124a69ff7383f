"""`medgrid ui`: MLflow's own UI over the project's local store, on loopback, until Ctrl-C.

It is plain `mlflow ui` with the store's paths filled in; medgrid adds only the URL of the latest
sweep's experiment and a clean stop.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

from pipeline.errors import UserError
from pipeline.tracking.server import wait_healthy
from pipeline.tracking.store import (
    absolute_sqlite,
    artifact_root,
    sqlite_path,
    upgrade_proxied_artifacts,
)

STARTUP_TIMEOUT_S = 60.0


def serve_ui(store_uri: str, artifacts_dir: Path, port: int) -> int:
    """Start the UI, print where to open it, and block until it stops or Ctrl-C; exit code."""
    store_uri = absolute_sqlite(store_uri)
    db = sqlite_path(store_uri)
    if db is not None and not db.is_file():
        raise UserError(f"--tracking-uri {store_uri}: no such file {db}; expected the mlflow.db "
                        "of an earlier `medgrid tune` (run from the same directory)")
    upgrade_proxied_artifacts(store_uri, artifacts_dir)
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store_uri,
               "--default-artifact-root", artifact_root(artifacts_dir), "--no-serve-artifacts",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    # Its log goes to a file (a pipe nobody reads would fill up and stall the UI); its own
    # process group, so the terminal's Ctrl-C reaches medgrid, which then stops the UI.
    log = tempfile.TemporaryFile()
    # `kill` (SIGTERM) must stop the UI too: by default it ends this process without running
    # `finally`, and the UI, in its own session, would go on serving with nobody to stop it.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        if not wait_healthy(url, STARTUP_TIMEOUT_S) or process.poll() is not None:
            reason = _last_line(process, log)
            raise UserError(f"the MLflow UI did not start on {url} ({reason}); expected a free "
                            "port (try --port) and a readable store")
        print(f"MLflow UI: {_start_page(url, store_uri)}", flush=True)
        print("(Ctrl-C stops it)", flush=True)
        process.wait()
        return 0 if process.returncode in (0, -signal.SIGTERM) else 1
    except KeyboardInterrupt:
        print("\nstopping the MLflow UI", flush=True)
        return 0
    finally:
        _stop(process)
        log.close()
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _start_page(url: str, store_uri: str) -> str:
    """The latest sweep's experiment, or the UI's home page when there is no sweep yet."""
    from mlflow.tracking import MlflowClient

    from pipeline.tracking.runs import latest_sweep_experiment

    try:
        latest = latest_sweep_experiment(MlflowClient(url))
    except Exception:  # the page is a convenience: never let it stop the UI
        latest = None
    # workflowType: MLflow 3's UI opens in its GenAI mode (traces, judges, prompts) unless told;
    # a sweep's runs belong to its "Model training" mode (runs, charts, models).
    return f"{url}/#/experiments/{latest[0]}/runs?workflowType=machine_learning" if latest else url


def _last_line(process: subprocess.Popen[bytes], log: IO[bytes]) -> str:
    if process.poll() is None:
        return "no answer"
    log.seek(0)
    text = log.read().decode(errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"exit code {process.returncode}"


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the UI's whole process group (its uvicorn worker may outlive the main process)."""
    try:
        os.killpg(process.pid, signal.SIGTERM if process.poll() is None else signal.SIGKILL)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # whatever of the group is left
    except ProcessLookupError:
        pass
    process.wait()
