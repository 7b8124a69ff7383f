"""A private MLflow tracking server for the length of one sweep (`open_tracking` gives a sweep
its tracking URI: the user's server, checked, or a private one over the local store).

SQLite takes one writer at a time, so parallel trials must not open `mlflow.db` themselves. The
driver starts MLflow's server (one uvicorn process, `serve.py`) on a free loopback port over the
same store; trials log metrics over HTTP, the single server process serialises the writes, and
artifacts go straight to `file://` URIs under the store's artifact directory (the server listens
on loopback only, so every trial runs on this machine).

The server runs in a session of its own, so the terminal's Ctrl-C (SIGINT to the foreground
process group) reaches the driver but not the server: the driver still needs it to close the
interrupted sweep's runs, and stops it last.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from pipeline.errors import UserError
from pipeline.tracking.store import (
    absolute_sqlite,
    artifact_root,
    sqlite_path,
    store_in_place,
    upgrade_proxied_artifacts,
)

_PR_SET_PDEATHSIG = 1
# How long a user's server gets to answer before medgrid gives up: long enough for a blip,
# short enough that a wrong URI fails in seconds rather than after MLflow's request retries.
REMOTE_TIMEOUT_S = 5.0
# uvicorn's words when the port was taken between `free_port()` and the server's bind.
_ADDRESS_IN_USE = "address already in use"
_PORT_TRIES = 3


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


def wait_healthy(url: str, timeout: float, alive: Callable[[], bool] = lambda: True) -> bool:
    """Poll `<url>/health` until it answers 200, `timeout` seconds pass, or `alive()` turns
    False (a server that exited will never answer: no use waiting out the timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
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


def check_sqlite_store(uri: str) -> None:
    """Refuse a SQLite store that cannot be written, in one line and at once: MLflow's server
    retries opening it with back-off for minutes before giving up."""
    db = sqlite_path(uri)
    if db is None:
        return
    if db.exists():
        try:  # a real write lock: permission bits say nothing of read-only mounts, or to root
            with sqlite3.connect(f"{db.as_uri()}?mode=rw", uri=True, timeout=5) as conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.rollback()
            conn.close()
        except sqlite3.Error as exc:
            if "locked" not in str(exc):  # busy with another sweep's writes: writable
                raise UserError(f"--tracking-uri {uri}: cannot write {db} ({exc}); expected a "
                                "writable SQLite file") from None
        return
    if not db.parent.is_dir():
        raise UserError(f"--tracking-uri {uri}: {db.parent} is not a directory; expected the "
                        "database file in an existing directory")
    try:
        with tempfile.TemporaryFile(dir=db.parent):
            pass
    except OSError as exc:
        raise UserError(f"--tracking-uri {uri}: cannot create {db} ({exc.strerror or exc}); "
                        "expected a writable directory") from None


# Database servers MLflow stores runs in (SQLAlchemy URI schemes, `postgresql+psycopg2` too),
# whose drivers take a connect timeout in seconds.
_DATABASE_SCHEMES = ("postgresql", "mysql")
DATABASE_TIMEOUT_S = 5


def check_database_store(uri: str) -> None:
    """Refuse a database store that cannot be opened (no such database, wrong password, no
    server), in one line and within seconds: MLflow's server retries it with back-off for
    minutes. The password never appears in the message."""
    if uri.split(":", 1)[0].split("+", 1)[0] not in _DATABASE_SCHEMES:
        return
    import sqlalchemy  # a second of imports, for database stores only

    shown = uri
    try:
        url = sqlalchemy.engine.make_url(uri)
        shown = url.render_as_string(hide_password=True)
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.NullPool,
                                          connect_args={"connect_timeout": DATABASE_TIMEOUT_S})
        with engine.connect():
            pass
        engine.dispose()
    except ImportError as exc:  # e.g. a bare postgresql:// means psycopg 3 to SQLAlchemy 2.1
        raise UserError(f"--tracking-uri {shown}: no database driver for it ({exc}); expected "
                        "an installed driver named in the URI, e.g. postgresql+psycopg2://"
                        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError) as exc:
        cause = getattr(exc, "orig", None) or exc
        said = " ".join(str(cause).split())
        if len(said) > 240:
            said = said[:240] + "..."
        raise UserError(f"--tracking-uri {shown}: cannot open the database ({said}); expected a "
                        "database that exists and that this user may open (e.g. created with "
                        "createdb)") from None


# The line of a Python traceback that names the error, e.g. "mlflow.exceptions.X: message".
_ERROR_LINE = re.compile(r"^(?:[A-Za-z_][\w]*\.)*([A-Za-z_]\w*(?:Error|Exception)):\s*(.*)$")


def last_error_line(log: str) -> str:
    """The error a dead server's log ends with, in one short line ('' if none)."""
    for line in reversed(log.splitlines()):
        match = _ERROR_LINE.match(line.strip())
        if match:
            name, message = match.groups()
            message = " ".join(message.split())
            return f"{name}: {message[:240]}{'...' if len(message) > 240 else ''}"
    return ""


class LocalTrackingServer:
    """MLflow's tracking server (`serve.py`) over a local backend store, bound to loopback, in
    its own session, stopped on exit."""

    def __init__(self, backend_uri: str, artifacts_dir: Path, log_file: Path,
                 startup_timeout: float = 90.0) -> None:
        self.backend_uri = backend_uri
        self.artifacts_dir = artifacts_dir.resolve()
        self.log_file = log_file
        self.startup_timeout = startup_timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._logged_before = 0

    @property
    def pid(self) -> int | None:
        """The server's pid (also its session and process group id), once started."""
        return self._process.pid if self._process is not None else None

    def start(self) -> str:
        """Start the server and return its URL once `/health` answers; a `UserError` with the
        server's own last error line if it exits first."""
        self.launch()
        return self.wait_ready()

    def launch(self) -> None:
        """Check the store and start the server process without waiting for it: the driver
        starts Ray meanwhile (`wait_ready` then waits for whatever start-up is left)."""
        check_sqlite_store(self.backend_uri)
        check_database_store(self.backend_uri)
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        # A new store's tables are made by the server process itself (serve.py), under a lock.
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._spawn()

    def _spawn(self) -> None:
        # MLflow's app under uvicorn in one process (`serve.py`: what `mlflow server --workers 1
        # --no-serve-artifacts` runs, without its first process); plain file artifact URIs, so
        # trials on this machine write the files straight into ./mlruns and every MLflow tool
        # reads them (see tracking/store.py).
        command = [sys.executable, "-m", "pipeline.tracking.serve", self.backend_uri,
                   artifact_root(self.artifacts_dir), str(self.port)]
        with open(self.log_file, "ab") as log:
            self._logged_before = log.tell()
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # out of the terminal's process group: see the docstring
                # Called from the main thread: the death signal follows the thread that forks.
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - the child only calls prctl
            )

    def wait_ready(self) -> str:
        """The server's URL once `/health` answers. The port was free when it was picked, but
        Ray starts beside the server and may take it first: then the server is started again
        on another port (a few times at most)."""
        for _ in range(_PORT_TRIES):
            process = self._process
            assert process is not None, "launch() first"
            try:
                if wait_healthy(self.url, self.startup_timeout, lambda p=process: p.poll() is None):
                    return self.url
            except BaseException:  # e.g. Ctrl-C while it starts: `__exit__` will not run
                self.stop()
                raise
            code = process.poll()
            said = self._log_since_launch()
            self.stop()
            if code is not None and _ADDRESS_IN_USE in said:
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
                self._spawn()
                continue
            if code is not None:
                line = last_error_line(said)
                raise UserError(f"the local MLflow server over {self.backend_uri} exited at "
                                f"once (code {code}){': ' + line if line else ''}; expected a "
                                f"store it can open and write (see {self.log_file})")
            break
        raise UserError(f"the local MLflow server over {self.backend_uri} did not answer within "
                        f"{self.startup_timeout:.0f} s; expected a writable store (see "
                        f"{self.log_file})")

    def _log_since_launch(self) -> str:
        with open(self.log_file, "rb") as log:
            log.seek(self._logged_before)
            return log.read().decode(errors="replace")

    def terminate(self) -> None:
        """Ask the server to stop (SIGTERM to its process group) without waiting: `stop` then
        waits, so the server winds down meanwhile (e.g. while Ray shuts down)."""
        if self._process is None:
            return
        try:
            os.killpg(self._process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        """Stop the server and its worker processes (its whole process group: a uvicorn worker
        outlives a server killed alone)."""
        if self._process is None:
            return
        group = self._process.pid
        self.terminate()
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        try:  # whatever of the group did not go on SIGTERM
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._process.wait()
        deadline = time.monotonic() + 5  # SIGKILL is delivered, not awaited: see them gone
        while time.monotonic() < deadline:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    def __enter__(self) -> LocalTrackingServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class PendingTracking:
    """The sweep's tracking URI, possibly still starting: `uri()` waits for it."""

    def __init__(self, uri: str, server: LocalTrackingServer | None = None) -> None:
        self._uri, self._server, self._ready = uri, server, False

    def uri(self) -> str:
        """The HTTP tracking URI, once it answers (a private server's start-up awaited)."""
        if self._server is not None and not self._ready:
            self._uri = self._server.wait_ready()
            self._ready = True
        return self._uri

    def release(self) -> None:
        """Nothing will log any more: a private server starts stopping now (its context waits
        for it at the end)."""
        if self._server is not None:
            self._server.terminate()


def opens_without_writing(uri: str, artifacts_dir: Path, log_dir: Path) -> bool:
    """Whether `open_tracking` would create or change nothing on disk: a user's server, or a
    local store already in place with its artifact and log directories (a warm start). Then
    the private server can start while the data loads, and a bad data file still leaves
    everything as it was."""
    return is_remote(uri) or (log_dir.is_dir()
                              and store_in_place(absolute_sqlite(uri), artifacts_dir))


@contextmanager
def open_tracking(uri: str, artifacts_dir: Path, log_dir: Path) -> Iterator[PendingTracking]:
    """The sweep's tracking: the user's server, or a private one over a local store, launched
    here and awaited by `uri()` (the driver starts Ray in between).

    A user's server is checked by `run_sweep` before the data is loaded.
    """
    if is_remote(uri):
        yield PendingTracking(uri.rstrip("/"))
        return
    backend = absolute_sqlite(uri)
    upgraded = upgrade_proxied_artifacts(backend, artifacts_dir)
    if upgraded:
        print(f"[medgrid] {upgraded} runs and experiments of an older medgrid now record their "
              f"artifacts as file URIs under {artifacts_dir}/", flush=True)
    server = LocalTrackingServer(backend, artifacts_dir, log_dir / "mlflow-server.log")
    server.launch()
    try:
        yield PendingTracking(server.url, server)
    finally:
        server.stop()
