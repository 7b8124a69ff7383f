"""The sweep's private MLflow server: out of the terminal's reach, stopped with every process it
started, and a store it cannot open reported at once in one line (issue 14, items 2 and 6)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.process_session import session_pids
from pipeline.tracking.server import LocalTrackingServer, last_error_line

SPACE = "name: s\nmodel: numpy_logreg\nparams: {epochs: 1, learning_rate: 0.01}\n"


@pytest.mark.slow
def test_the_server_has_a_session_of_its_own_and_leaves_no_process(tmp_path: Path) -> None:
    server = LocalTrackingServer(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "mlruns",
                                 tmp_path / "server.log")
    with server:
        assert server.pid is not None
        # Ctrl-C goes to the terminal's foreground process group: not to this one
        assert os.getsid(server.pid) == server.pid != os.getsid(0)
        assert len(session_pids(server.pid)) >= 2  # the server and its uvicorn worker
        os.kill(server.pid, signal.SIGKILL)  # the main process alone, as a user might
    assert session_pids(server.pid) == []  # its uvicorn worker went too


@pytest.mark.slow
@pytest.mark.parametrize("uri, said", [
    ("foo://x", "unsupported URI 'foo://x'"),
    ("file:///nonexistent/dir", "filesystem tracking backend"),
    ("sqlite:////proc/readonly.db", "cannot create /proc/readonly.db"),
])
def test_a_store_that_cannot_be_opened_fails_at_once_in_one_line(
        uri: str, said: str, tmp_path: Path, tiny_npz: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(SPACE)
    started = time.monotonic()
    assert main(["tune", "s.yaml", "--data", str(tiny_npz), "--tracking-uri", uri]) == 2
    assert time.monotonic() - started < 60  # it used to wait out a 90 s start-up timeout
    err = capsys.readouterr().err
    assert err.startswith("medgrid: error: ") and err.count("\n") == 1, err
    assert said in err and uri in err


def test_the_last_error_line_of_a_traceback_is_what_the_user_reads() -> None:
    log = ("2026/01/01 INFO starting\nTraceback (most recent call last):\n"
           '  File "x.py", line 1, in <module>\n    raise MlflowException(\n'
           "mlflow.exceptions.MlflowException: it broke\n   because\n\n")
    assert last_error_line(log) == "MlflowException: it broke"
    assert last_error_line("just noise\n") == ""
