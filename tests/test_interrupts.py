"""Real `medgrid tune` processes on tiny data (issue 14): a sweep stopped by a signal, sent as a
terminal or a scheduler sends it (items 2, 3); `--resume` after its space was edited (item 1); the
ports a local sweep opens (item 4); a disk that fills up while a sweep runs (item 5).
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest
from conftest import steps
from mlflow.tracking import MlflowClient
from sockets import Listener, listeners

from pipeline import output_loss
from pipeline.process_session import kill_session, session_pids
from pipeline.synthetic import synthesize

pytestmark = pytest.mark.slow

# Two trials that run side by side for a few seconds each: long enough to be caught running.
SPACE = """\
name: stoppable
model: torch_ffn
params: {epochs: 12, batch_size: 32, hidden_size: 32, layers: 2, learning_rate: [0.01, 0.003]}
checkpoint_every: 3
"""
TRIALS = {"stoppable lr=0.01 seed=42", "stoppable lr=0.003 seed=42"}


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Big enough that an epoch takes a moment (3,000 training images)."""
    return synthesize(tmp_path_factory.mktemp("data") / "small.npz", seed=0, n_train=3000,
                      n_val=100, n_test=1000)


def runs(work: Path) -> list:
    """Every run of the sweep's experiment, read straight from the store."""
    db = work / "mlflow.db"
    if not db.exists():
        return []
    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("medgrid")
    return [] if experiment is None else list(client.search_runs([experiment.experiment_id]))


def epochs_logged(work: Path, run_id: str) -> int:
    return len(steps(work / "mlflow.db", run_id))


def server_session(work: Path) -> int | None:
    """The session of the sweep's private MLflow server (it leads its own): found by the store
    it serves, which is in its command line."""
    store = f"sqlite:///{work / 'mlflow.db'}"
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"pipeline.tracking.serve" in command and store.encode() in command:
            return int(entry.name)
    return None


class Sweep:
    """One `medgrid tune` process in a session of its own, and the sessions it started."""

    def __init__(self, work: Path, data: Path, *extra: str) -> None:
        self.work = work
        self.args = ["tune", "space.yaml", "--data", str(data), "--num-cpus", "2",
                     "--max-concurrent", "2", *extra]
        self.driver = subprocess.Popen([sys.executable, "-m", "pipeline", *self.args], cwd=work,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, start_new_session=True)
        self.server: int | None = None
        self.listeners: set[Listener] = set()

    def wait_for(self, condition: Callable[[], bool], timeout: float = 240) -> None:
        """Poll until `condition()` holds while the sweep runs (noting its server's session)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.driver.poll() is None:
            self.server = self.server or server_session(self.work)
            self.listeners |= listeners(self.leftovers())
            if condition():
                return
            time.sleep(0.2)
        out, err = self.driver.communicate() if self.driver.poll() is not None else ("", "")
        raise AssertionError(f"the sweep never got there (exit {self.driver.poll()}):\n{out}{err}")

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        out, err = self.driver.communicate(timeout=timeout)
        return self.driver.returncode, out, err

    def leftovers(self) -> list[int]:
        """Processes of the sweep still alive: its Ray (the driver's session), its server."""
        sessions = [self.driver.pid] + ([self.server] if self.server else [])
        return [pid for session in sessions for pid in session_pids(session)]

    def leftover_commands(self) -> list[str]:
        """The leftovers with their command lines: which part of the sweep outlived it."""
        commands = []
        for pid in self.leftovers():
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue  # gone since
            commands.append(f"{pid}: {command.decode(errors='replace').strip()}")
        return commands

    def kill(self) -> None:
        """Whatever the sweep left, killed (never `ray stop --force`: other tests' Ray)."""
        for session in (self.driver.pid, self.server):
            if session:
                kill_session(session)
        if self.driver.poll() is None:
            self.driver.kill()
        self.driver.wait()


@pytest.fixture
def sweeps() -> Iterator[list[Sweep]]:
    """Sweeps a test starts; all of them killed at the end, whatever happened."""
    started: list[Sweep] = []
    yield started
    for sweep in started:
        sweep.kill()


def _query(work: Path, sql: str) -> list[tuple]:
    """Rows from the store, read-only with plain sqlite3 while the sweep runs (an MLflow client
    here would race the server's creation of the tables); none before the tables exist."""
    try:
        with closing(sqlite3.connect(f"{(work / 'mlflow.db').as_uri()}?mode=ro", uri=True,
                                     timeout=5)) as db:
            return db.execute(sql).fetchall()
    except sqlite3.Error:
        return []


RUNNING_TRIALS = ("SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                  "WHERE t.key = 'medgrid.kind' AND t.value = 'trial' AND r.status = 'RUNNING'")


def trial_started(work: Path) -> bool:
    return bool(_query(work, RUNNING_TRIALS))


def mid_trial(work: Path) -> bool:
    """A trial has logged two epochs (and so is in the middle of a later one)."""
    return bool(_query(work, "SELECT run_uuid FROM metrics WHERE key = 'train/loss' AND "
                       f"run_uuid IN ({RUNNING_TRIALS}) GROUP BY run_uuid HAVING COUNT(*) >= 2"))


def assert_stopped(sweep: Sweep, code: int, err: str, name: str, expected_code: int) -> None:
    """What a stopped sweep must leave: its exit code, one line saying why (`name`: the
    signal, or the cause when medgrid stopped it) and how to resume, every run closed
    (unfinished ones KILLED, the parent KILLED), and no process of it alive."""
    assert code == expected_code, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    said = f"interrupted by {name}" if name.startswith("SIG") else f"stopped: {name}"
    assert last.startswith(f"medgrid: {said}: "), err
    assert last.endswith(" ".join(["medgrid", *sweep.args, "--resume"])), last
    statuses = {r.info.run_name: r.info.status for r in runs(sweep.work)}
    [parent] = [r for r in runs(sweep.work) if r.data.tags.get("medgrid.kind") == "sweep"]
    assert parent.info.status == "KILLED"
    assert "RUNNING" not in statuses.values(), statuses
    for run in runs(sweep.work):
        if run.info.status == "FINISHED" and run.data.tags.get("medgrid.kind") == "trial":
            assert epochs_logged(sweep.work, run.info.run_id) == 12  # finished means finished
    assert sweep.server is not None  # it was found, so the next line checks it too
    assert sweep.leftover_commands() == []


def assert_loopback_only(sweep: Sweep) -> None:
    """Every port the sweep opened so far (Ray's GCS, raylet, workers and runtime-env agent, the
    driver, the private MLflow server) is bound to 127.0.0.1: nothing reachable from the network
    (Ray used to bind [::] and put its runtime-env agent on the external address)."""
    seen = {listener.process.split(".")[0] for listener in sweep.listeners}
    assert {"gcs_server", "raylet", "ray::RuntimeEnvAgent", "ray::ResourceTrainable"} <= seen, seen
    assert sweep.server is not None  # the private server's session was watched too
    assert [x for x in sweep.listeners if not x.loopback] == []


# How the signal is sent: (to the whole process group as a terminal's Ctrl-C does, or to the
# driver alone as `kill` does), when (a trial has just started, or is mid-epoch), which signal,
# how many times (a second one forces the exit), and the exit code expected.
STOPS = {
    "Ctrl-C mid-epoch": ("group", mid_trial, signal.SIGINT, 1, 130),
    "Ctrl-C at a trial start": ("group", trial_started, signal.SIGINT, 1, 130),
    "SIGINT to the driver at a trial start": ("driver", trial_started, signal.SIGINT, 1, 130),
    "SIGTERM to the driver mid-epoch": ("driver", mid_trial, signal.SIGTERM, 1, 143),
    "Ctrl-C twice mid-epoch": ("group", mid_trial, signal.SIGINT, 2, 130),
}


@pytest.mark.parametrize("how", STOPS)
def test_a_signal_stops_the_sweep_and_closes_everything(
        how: str, tmp_path: Path, small_npz: Path, sweeps: list[Sweep]) -> None:
    to, when, signum, times, expected_code = STOPS[how]
    (tmp_path / "space.yaml").write_text(SPACE)
    sweep = Sweep(tmp_path, small_npz)
    sweeps.append(sweep)
    sweep.wait_for(lambda: when(tmp_path))
    if how == "Ctrl-C mid-epoch":
        assert_loopback_only(sweep)  # item 4, while every part of the sweep is up
    for _ in range(times):
        if to == "group":  # a terminal sends SIGINT to the whole foreground group
            os.killpg(sweep.driver.pid, signum)
        else:
            os.kill(sweep.driver.pid, signum)
        time.sleep(0.3)
    code, _, err = sweep.finish()
    assert_stopped(sweep, code, err, signal.Signals(signum).name, expected_code)



def test_a_sweep_whose_reader_goes_away_stops_as_for_a_signal(
        tmp_path: Path, small_npz: Path, sweeps: list[Sweep]) -> None:
    """`medgrid tune ... | head`: once head has its lines, the next progress line finds no
    reader. The sweep stops as for SIGTERM (runs KILLED, the resume line on stderr), exit 1."""
    (tmp_path / "space.yaml").write_text(SPACE)
    sweep = Sweep(tmp_path, small_npz)
    sweeps.append(sweep)
    sweep.wait_for(lambda: mid_trial(tmp_path))
    assert sweep.driver.stdout is not None
    sweep.driver.stdout.close()
    code, _, err = sweep.finish()
    assert_stopped(sweep, code, err, output_loss.CAUSE, 1)


def test_a_sweep_started_without_a_reader_runs_nothing_and_says_so(
        tmp_path: Path, small_npz: Path, sweeps: list[Sweep]) -> None:
    """Its output already closed: it used to exit 0 at its first line, having run nothing."""
    (tmp_path / "space.yaml").write_text(SPACE)
    sweep = Sweep(tmp_path, small_npz)
    sweeps.append(sweep)
    assert sweep.driver.stdout is not None
    sweep.driver.stdout.close()
    code, _, err = sweep.finish()
    assert code == 1, err
    assert err.strip().splitlines() == [
        f"medgrid: stopped: {output_loss.CAUSE} before the sweep started"]
    assert sweep.leftover_commands() == []


def test_resume_refuses_an_edited_space_and_resumes_the_original(
        tmp_path: Path, small_npz: Path, sweeps: list[Sweep]) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    sweep = Sweep(tmp_path, small_npz)
    sweeps.append(sweep)
    sweep.wait_for(lambda: trial_started(tmp_path))
    os.kill(sweep.driver.pid, signal.SIGTERM)  # as a batch scheduler stops a job
    code, _, err = sweep.finish()
    assert_stopped(sweep, code, err, "SIGTERM", 143)

    ray_state = {p: p.read_bytes() for p in (tmp_path / "ray_results").rglob("*") if p.is_file()}
    before = {r.info.run_id: r.info.status for r in runs(tmp_path)}
    space.write_text(SPACE.replace("[0.01, 0.003]", "[0.5, 0.05]"))
    edited = Sweep(tmp_path, small_npz, "--resume")
    sweeps.append(edited)
    code, out, err = edited.finish(timeout=240)
    assert code == 2, out + err
    assert err.startswith("medgrid: error: --resume: space.yaml changed since sweep "
                          "'stoppable' started") and err.count("\n") == 1, err
    # Names the trials it had run that the edited space no longer has (which of the two had
    # started by the SIGTERM depends on timing, so every one that had a run is expected).
    started = {r.info.run_name for r in runs(tmp_path)
               if r.data.tags.get("medgrid.kind") == "trial"}
    assert started and started <= TRIALS
    assert all(f"'{name}'" in err for name in started), (started, err)
    assert "restore the file" in err and "without --resume" in err
    after = {p: p.read_bytes() for p in (tmp_path / "ray_results").rglob("*") if p.is_file()
             and p.name != "mlflow-server.log"}
    assert after == {p: b for p, b in ray_state.items() if p.name != "mlflow-server.log"}
    assert {r.info.run_id: r.info.status for r in runs(tmp_path)} == before  # untouched

    space.write_text(SPACE)
    resumed = Sweep(tmp_path, small_npz, "--resume")
    sweeps.append(resumed)
    code, out, err = resumed.finish(timeout=300)
    assert code == 0, out + err
    trials = [r for r in runs(tmp_path) if r.data.tags.get("medgrid.kind") == "trial"]
    assert {r.info.run_name for r in trials} == TRIALS
    assert {r.info.status for r in runs(tmp_path)} == {"FINISHED"}
    for run in trials:
        assert epochs_logged(tmp_path, run.info.run_id) == 12


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 48 MB file system of its own (tmpfs), so that the test can fill it."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], check=False)


def test_a_disk_filling_up_stops_the_sweep_with_its_runs_closed(
        small_disk: Path, small_npz: Path, sweeps: list[Sweep]) -> None:
    """Another process fills the disk mid-sweep: the sweep stops within a minute, while there is
    room to close its runs, says so in one line, and can be resumed once space is freed."""
    # Trials long enough that the sweep is still running when the disk watch next looks.
    (small_disk / "space.yaml").write_text(SPACE.replace("epochs: 12", "epochs: 200"))
    sweep = Sweep(small_disk, small_npz)
    sweeps.append(sweep)
    sweep.wait_for(lambda: trial_started(small_disk))
    leave = 8 * 2**20  # below medgrid's 16 MB reserve, above nothing
    with open(small_disk / "filler", "wb") as filler:
        filler.truncate(0)
        filler.write(b"\0" * (shutil.disk_usage(small_disk).free - leave))
    filled = time.monotonic()
    code, _, err = sweep.finish(timeout=60)
    assert time.monotonic() - filled < 60
    assert code == 1, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("medgrid: stopped: only ") and "MB free on the disk of" in last, err
    assert last.endswith(" ".join(["medgrid", *sweep.args, "--resume"])), last
    statuses = [r.info.status for r in runs(small_disk)]
    assert "RUNNING" not in statuses and "KILLED" in statuses, statuses
    assert sweep.leftover_commands() == []
