"""A private MLflow tracking server for the length of one sweep.

SQLite takes one writer at a time, so parallel trials must not open `mlflow.db` themselves. The
driver starts `mlflow server --workers 1` on a free loopback port over the same store; trials
log metrics over HTTP, the single server process serialises the writes, and artifacts go straight
to `file://` URIs under the store's artifact directory (the server listens on loopback only, so
every trial runs on this machine).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from pipeline.errors import UserError
from pipeline.tracking_store import artifact_root

_PR_SET_PDEATHSIG = 1
# How long a user's server gets to answer before medgrid gives up: long enough for a blip,
# short enough that a wrong URI fails in seconds rather than after MLflow's request retries.
REMOTE_TIMEOUT_S = 5.0


def _die_with_parent() -> None:
    """Runs in the child before exec: if the driver is SIGKILLed, the server goes with it."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: the server is still stopped on a normal exit
        pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, timeout: float) -> bool:
    """Poll `<url>/health` until it answers 200 or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return False


def is_remote(uri: str) -> bool:
    """Whether `uri` names a tracking server (rather than a store medgrid opens itself)."""
    return uri.startswith(("http://", "https://"))


def require_server(uri: str, timeout: float | None = None) -> str:
    """`uri` without a trailing slash, once its `/health` answers; a `UserError` otherwise."""
    url = uri.rstrip("/")
    timeout = REMOTE_TIMEOUT_S if timeout is None else timeout
    if not wait_healthy(url, timeout):
        raise UserError(f"MLflow tracking server {uri} is unreachable (no answer to /health "
                        f"within {timeout:.0f} s); expected a running server")
    return url


class LocalTrackingServer:
    """`mlflow server` over a local backend store, bound to loopback, stopped on exit."""

    def __init__(self, backend_uri: str, artifacts_dir: Path, log_file: Path,
                 startup_timeout: float = 90.0) -> None:
        self.backend_uri = backend_uri
        self.artifacts_dir = artifacts_dir.resolve()
        self.log_file = log_file
        self.startup_timeout = startup_timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        """Start the server and return its URL once `/health` answers."""
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", self.backend_uri,
            # Plain file URIs, no artifact proxy: trials on this machine write the files
            # straight into ./mlruns, and every MLflow tool reads them (see tracking_store).
            "--default-artifact-root", artifact_root(self.artifacts_dir), "--no-serve-artifacts",
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]
        # The job runner (MLflow's background GenAI jobs) forks several 200 MB workers that a
        # training sweep never uses.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(self.log_file, "ab") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads run yet in the driver
            )
        if not wait_healthy(self.url, self.startup_timeout) or self._process.poll() is not None:
            self.stop()
            raise UserError(f"the local MLflow server over {self.backend_uri} did not start; "
                            f"expected a writable store (see {self.log_file})")
        return self.url

    def stop(self) -> None:
        """Stop the server (and its worker processes)."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> LocalTrackingServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
