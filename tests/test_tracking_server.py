"""The sweep's private MLflow server: out of the terminal's reach, stopped with every process it
started, a store it cannot open reported at once in one line (issue 14, items 2 and 6), and two
servers started at once on a new store (item 10)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cluster_fixtures import POSTGRES_URL, require_postgres
from mlflow.tracking import MlflowClient

from pipeline.cli import main
from pipeline.errors import UserError
from pipeline.process_session import session_pids
from pipeline.tracking.server import (
    LocalTrackingServer,
    check_database_store,
    check_sqlite_store,
    free_port,
    is_remote,
    last_error_line,
    require_server,
    wait_healthy,
)
from pipeline.tracking.store import create_sqlite_schema


@pytest.mark.slow
def test_two_servers_started_at_once_on_a_new_store_both_serve_it(tmp_path: Path) -> None:
    """Two sweeps started in the same second on a fresh directory: both servers used to migrate
    the new database at once, and one died ("Online migration expected to match one row")."""
    servers = [LocalTrackingServer(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "mlruns",
                                   tmp_path / f"server{i}.log") for i in range(2)]
    urls: dict[int, str] = {}
    done = threading.Event()

    def start(i: int) -> None:
        # Each in a thread that lives until the end: a server dies with the thread that
        # started it (PR_SET_PDEATHSIG follows the thread), as it would with its driver.
        try:
            urls[i] = servers[i].start()
        finally:
            done.wait()

    threads = [threading.Thread(target=start, args=(i,)) for i in range(2)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        while len(urls) < 2 and time.monotonic() < deadline and all(t.is_alive() for t in threads):
            time.sleep(0.1)
        assert len(urls) == 2, [log.read_text()[-2000:] for log in tmp_path.glob("server*.log")]
        for i, url in urls.items():
            client = MlflowClient(url)
            experiment = client.get_experiment_by_name("shared") or client.get_experiment(
                client.create_experiment("shared"))
            client.create_run(experiment.experiment_id, run_name=f"through server {i}")
        runs = MlflowClient(urls[0]).search_runs([experiment.experiment_id])
        assert sorted(r.info.run_name for r in runs) == ["through server 0", "through server 1"]
    finally:
        for server in servers:
            server.stop()
        done.set()
        for thread in threads:
            thread.join()


SPACE = "name: s\nmodel: numpy_logreg\nparams: {epochs: 1, learning_rate: 0.01}\n"


@pytest.mark.slow
def test_an_mlflow_without_its_fastapi_app_is_served_by_its_own_command(tmp_path: Path) -> None:
    """`serve.py` needs MLflow's FastAPI app and server constants; an MLflow without them (an
    older 3.x) still gets a working private server: its own `mlflow server` command."""
    port = free_port()
    blocked = ("import sys, runpy; sys.modules['mlflow.server.fastapi_app'] = None; "
               f"sys.argv = ['serve', 'sqlite:///{tmp_path / 'mlflow.db'}', "
               f"'file://{tmp_path / 'mlruns'}', '{port}']; "
               "runpy.run_module('pipeline.tracking.serve', run_name='__main__')")
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen([sys.executable, "-c", blocked], stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert wait_healthy(f"http://127.0.0.1:{port}", 90, lambda: server.poll() is None), \
            (tmp_path / "server.log").read_text()
        with open(f"/proc/{server.pid}/cmdline", "rb") as cmdline:
            assert b"mlflow\0server" in cmdline.read()  # the same process, now `mlflow server`
        experiments = MlflowClient(f"http://127.0.0.1:{port}").search_experiments()
        assert [e.name for e in experiments] == ["Default"]
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


@pytest.mark.slow
def test_the_server_has_a_session_of_its_own_and_leaves_no_process(tmp_path: Path) -> None:
    server = LocalTrackingServer(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "mlruns",
                                 tmp_path / "server.log")
    with server:
        assert server.pid is not None
        # Ctrl-C goes to the terminal's foreground process group: not to this one
        assert os.getsid(server.pid) == server.pid != os.getsid(0)
        # One process serves (no `mlflow server` parent importing MLflow a second time)
        assert session_pids(server.pid) == [server.pid]
        os.kill(server.pid, signal.SIGKILL)  # as a user might
    assert session_pids(server.pid) == []


def _processes_naming(text: str) -> list[int]:
    """Pids of the processes whose command line contains `text`."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().decode(
                    errors="replace"):
                pids.append(int(entry.name))
        except OSError:  # ended while we looked
            continue
    return pids


@pytest.mark.slow
def test_a_bad_data_file_beside_a_store_in_place_leaves_the_store_as_it_was(
        tmp_path: Path, monkeypatch, capsys) -> None:
    """A warm start launches the private server while the data loads (the store is in place:
    serving it writes nothing); a data file that then fails to load is still one line, exit 2,
    the store byte for byte as it was, and no server left running."""
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "mlflow.db"
    create_sqlite_schema(f"sqlite:///{db}", tmp_path / "mlruns")
    (tmp_path / "mlruns").mkdir()
    (tmp_path / "ray_results").mkdir()
    before = db.read_bytes()
    bad = tmp_path / "scan.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip archive")
    (tmp_path / "s.yaml").write_text(SPACE)
    assert main(["tune", "s.yaml", "--data", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "scan.npz" in err[0], err
    assert (tmp_path / "ray_results" / "mlflow-server.log").exists()  # it was launched first
    assert db.read_bytes() == before
    assert _processes_naming(str(db)) == []


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


def _database_uri(database: str) -> str:
    """The test PostgreSQL's URI (cluster_fixtures), with psycopg2 named, for `database`."""
    return urlsplit(POSTGRES_URL)._replace(scheme="postgresql+psycopg2",
                                           path=f"/{database}").geturl()


@pytest.mark.fast
@pytest.mark.parametrize("store, said", [
    ("no server", "Connection refused"),
    ("no driver", "no database driver for it (No module named 'psycopg')"),
])
def test_a_database_store_that_cannot_be_opened_is_one_line_in_seconds(
        store: str, said: str) -> None:
    port = free_port()  # nothing listens there
    uri = {"no server": f"postgresql+psycopg2://medgrid:secret@127.0.0.1:{port}/runs",
           "no driver": f"postgresql://medgrid:secret@127.0.0.1:{port}/runs"}[store]
    started = time.monotonic()
    with pytest.raises(UserError) as refused:
        check_database_store(uri)
    assert time.monotonic() - started < 30  # MLflow's own server retries for minutes
    message = str(refused.value)
    assert said in message and "\n" not in message
    assert "secret" not in message and "medgrid:***@" in message


@pytest.mark.slow
def test_a_postgresql_database_that_does_not_exist_fails_at_once_in_one_line(
        tmp_path: Path, tiny_npz: Path, capsys, monkeypatch) -> None:
    """MLflow's server retried such a store with back-off: 90 s before medgrid gave up."""
    require_postgres()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(SPACE)
    uri = _database_uri("medgrid_no_such_database")
    started = time.monotonic()
    assert main(["tune", "s.yaml", "--data", str(tiny_npz), "--tracking-uri", uri]) == 2
    assert time.monotonic() - started < 30
    err = capsys.readouterr().err
    assert err.startswith("medgrid: error: ") and err.count("\n") == 1, err
    assert 'database "medgrid_no_such_database" does not exist' in err
    assert not (tmp_path / "ray_results").exists() or not any((tmp_path / "ray_results").iterdir())


@pytest.mark.fast
def test_the_last_error_line_of_a_traceback_is_what_the_user_reads() -> None:
    log = ("2026/01/01 INFO starting\nTraceback (most recent call last):\n"
           '  File "x.py", line 1, in <module>\n    raise MlflowException(\n'
           "mlflow.exceptions.MlflowException: it broke\n   because\n\n")
    assert last_error_line(log) == "MlflowException: it broke"
    assert last_error_line("just noise\n") == ""


# ---------------------------------------------------------------- helpers, no server started
@pytest.mark.fast
@pytest.mark.parametrize(("uri", "remote"), [
    ("http://127.0.0.1:5000", True), ("https://mlflow.example.org/", True),
    ("sqlite:///mlflow.db", False), ("sqlite:////abs/mlflow.db", False),
    ("postgresql+psycopg2://u@h/db", False), ("file:///tmp/x", False), ("mlflow.db", False),
])
def test_only_http_uris_name_a_server(uri: str, remote: bool) -> None:
    assert is_remote(uri) is remote


@pytest.mark.fast
@pytest.mark.parametrize(("log", "line"), [
    ("mlflow.exceptions.MlflowException: it broke\n", "MlflowException: it broke"),
    ("ValueError: first\nOSError: [Errno 13] denied\n", "OSError: [Errno 13] denied"),
    ("KeyError:   spaced    out   \n", "KeyError: spaced out"),
    ("x: y\nINFO fine\n", ""),
    (f"RuntimeError: {'m' * 300}\n", f"RuntimeError: {'m' * 240}..."),
    ("", ""),
])
def test_the_last_error_line_table(log: str, line: str) -> None:
    assert last_error_line(log) == line


@pytest.mark.fast
def test_an_unreachable_server_is_one_user_error_naming_it() -> None:
    url = f"http://127.0.0.1:{free_port()}/"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(UserError, match=r"http://127\.0\.0\.1:\d+/ is unreachable"):
        require_server(url, timeout=0.5)
    assert time.monotonic() - started < 10


@pytest.mark.fast
def test_waiting_stops_as_soon_as_the_server_is_gone() -> None:
    started = time.monotonic()
    assert not wait_healthy(f"http://127.0.0.1:{free_port()}", 60, alive=lambda: False)
    assert time.monotonic() - started < 5


@pytest.mark.fast
@pytest.mark.parametrize(("where", "refused"), [
    ("missing/dir/mlflow.db", "is not a directory"),
    ("new.db", None),  # created by the server later, in a writable directory
])
def test_a_sqlite_store_is_checked_before_the_server_starts(where: str, refused: str | None,
                                                            tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / where}"
    if refused is None:
        check_sqlite_store(uri)
        check_sqlite_store("postgresql+psycopg2://u@h/db")  # not SQLite: not checked here
        return
    with pytest.raises(UserError, match=refused):
        check_sqlite_store(uri)


@pytest.mark.fast
def test_a_sqlite_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    (tmp_path / "mlflow.db").write_bytes(b"not a database" * 100)
    with pytest.raises(UserError, match="cannot write"):
        check_sqlite_store(f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.mark.slow
def test_a_store_file_that_is_not_a_database_beside_mlruns_is_one_line(
        tmp_path: Path, tiny_npz: Path, capsys, monkeypatch) -> None:
    """With mlruns/ and ray_results/ there, the warm-start check reads the file first: it must
    leave the refusal to the checks that say it in one line (it raised SQLite's traceback, exit
    1)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlflow.db").write_bytes(b"not a database" * 100)
    (tmp_path / "mlruns").mkdir()
    (tmp_path / "ray_results").mkdir()
    (tmp_path / "s.yaml").write_text(SPACE)
    assert main(["tune", "s.yaml", "--data", str(tiny_npz)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medgrid: error: ") and err.count("\n") == 1, err
    assert "file is not a database" in err and "mlflow.db" in err


@pytest.mark.slow
def test_a_server_whose_port_was_taken_starts_again_on_another(tmp_path: Path) -> None:
    """The port is picked free, then Ray starts beside the server and may bind it first: the
    server, which then fails to bind, is started again on another port."""
    import socket

    server = LocalTrackingServer(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "mlruns",
                                 tmp_path / "server.log")
    taken = server.port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        with server:
            assert server.port != taken and server.url.endswith(f":{server.port}")
            client = MlflowClient(server.url)
            experiment = client.create_experiment("after a retry")
            assert client.get_experiment(experiment).name == "after a retry"
    assert "address already in use" in (tmp_path / "server.log").read_text()
