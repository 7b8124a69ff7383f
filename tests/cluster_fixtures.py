"""Real components for the `cluster` tests: a fresh PostgreSQL database, MLflow tracking servers
over it, and a two-node Ray cluster started with `ray start` on this machine.

Each component stops only what it started: the Ray nodes carry a marker in their environment
(inherited by every raylet, agent and worker), so teardown never touches another Ray on this
machine the way a global `ray stop` would.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from pipeline.tracking.server import free_port, wait_healthy

POSTGRES_URL = os.environ.get("MEDGRID_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
RAY = Path(sys.executable).with_name("ray")
MARKER = "MEDGRID_TEST_CLUSTER"


def require_postgres() -> None:
    """Skip (or, with CI=true, fail) when the PostgreSQL these tests need does not answer."""
    import psycopg2

    try:
        psycopg2.connect(POSTGRES_URL, connect_timeout=3).close()
    except psycopg2.OperationalError as exc:
        why = str(exc).strip().splitlines()[0]
        reason = (f"PostgreSQL at {POSTGRES_URL} is unreachable ({why}); the cluster tests "
                  "need it (set MEDGRID_TEST_POSTGRES to another server)")
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason)  # CI promises the server: its absence is a failure, not a skip
        pytest.skip(reason)


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new, empty database for this test run (dropped afterwards); yields its URL."""
    import psycopg2
    from psycopg2 import sql

    name = f"medgrid_{secrets.token_hex(4)}"
    admin = psycopg2.connect(POSTGRES_URL, connect_timeout=3)
    admin.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
    try:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        # The driver named: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, not psycopg2.
        url = urlsplit(POSTGRES_URL)._replace(scheme="postgresql+psycopg2", path=f"/{name}")
        yield urlunsplit(url)
    finally:
        with admin.cursor() as cursor:  # FORCE: a server killed mid-test may leave sessions
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                           .format(sql.Identifier(name)))
        admin.close()


class MlflowServer:
    """`mlflow server` over a backend store, in its own process group; restartable on its port."""

    def __init__(self, backend_uri: str, directory: Path, extra_args: Sequence[str] = (),
                 env: dict[str, str] | None = None) -> None:
        self.backend_uri = backend_uri
        self.artifacts = directory / "artifacts"
        self.log_file = directory / "mlflow-server.log"
        self.extra_args = list(extra_args)
        self.env = env or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> MlflowServer:
        """Start the server and wait until `/health` answers."""
        command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                   self.backend_uri, "--artifacts-destination", str(self.artifacts),
                   "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                   *self.extra_args]
        # As pipeline/tracking/server.py: no idle GenAI job workers (~1.5 GB) beside the server.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **self.env}
        with open(self.log_file, "ab") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                             env=env, start_new_session=True)
        deadline = time.monotonic() + 120
        while self._process.poll() is None and time.monotonic() < deadline:
            if wait_healthy(self.url, 1):
                return self
        self.stop()
        raise RuntimeError(f"mlflow server did not start; log:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server and its workers (SIGTERM lets requests in flight finish)."""
        process, self._process = self._process, None
        if process is None:
            return
        _signal_group(process.pid, sig)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
        _signal_group(process.pid, signal.SIGKILL)  # uvicorn workers left behind, if any

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log, for failure messages."""
        if not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])


def _parent(pid: int) -> int:
    """The parent pid of `pid` (0 once it has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])  # the name, in (), may hold spaces


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _node_ports() -> list[str]:
    """Every port a Ray node opens, chosen free, so two nodes share one machine."""
    return [f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
            "--min-worker-port=0", "--max-worker-port=0"]  # 0: workers bind random ports


class RayCluster:
    """A Ray head and worker nodes on 127.0.0.1, one CPU each, with token authentication."""

    def __init__(self, temp_dir: Path) -> None:
        self.temp_dir = temp_dir
        self.marker = secrets.token_hex(8)
        self.env = {
            # Token auth as on a real cluster: every node and driver presents this token.
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "RAY_USAGE_STATS_ENABLED": "0", MARKER: self.marker,
            # The GCS declares a node dead after 5 failed health checks 3 s apart by default; a
            # killed raylet refuses at once, so 3 checks 1 s apart find it without false alarms.
            "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
        }
        self.address = f"127.0.0.1:{free_port()}"
        self.node_ports: dict[str, int] = {}  # node id -> node manager port
        self.head_id = ""
        self.worker_ids: list[str] = []

    def start(self, workers: int = 1) -> RayCluster:
        """Start the head and `workers` worker nodes; wait until all are alive."""
        port = self.address.rsplit(":", 1)[1]
        self._ray_start(["--head", f"--port={port}", "--include-dashboard=false"])
        self.head_id = self._new_node(set())
        for _ in range(workers):
            self._ray_start([f"--address={self.address}"])
            self.worker_ids.append(self._new_node({self.head_id, *self.worker_ids}))
        return self

    def _new_node(self, known: set[str]) -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            new = set(self.alive_nodes()) - known
            if new:
                return new.pop()
            time.sleep(1)
        raise RuntimeError("a new Ray node never registered with the head")

    def _ray_start(self, args: list[str]) -> None:
        command = [str(RAY), "start", "--num-cpus=1", "--node-ip-address=127.0.0.1",
                   f"--temp-dir={self.temp_dir}", "--object-store-memory=100000000",
                   "--disable-usage-stats", *_node_ports(), *args]
        result = subprocess.run(command, env={**os.environ, **self.env}, capture_output=True,
                                text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")

    def alive_nodes(self) -> dict[str, int]:
        """Node id -> node manager port of every live node, as the cluster's GCS sees it."""
        probe = ("import json, sys, ray; ray.init(address=sys.argv[1], log_to_driver=False); "
                 "print(json.dumps({n['NodeID']: n['NodeManagerPort'] for n in ray.nodes() "
                 "if n['Alive']}))")
        result = subprocess.run([sys.executable, "-c", probe, self.address],
                                env={**os.environ, **self.env},
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"cannot list the Ray nodes:\n{result.stderr[-2000:]}")
        nodes = json.loads(result.stdout.strip().splitlines()[-1])
        self.node_ports.update(nodes)
        return nodes

    def kill_node(self, node_id: str) -> None:
        """SIGKILL the raylet of node `node_id` and everything it started (its workers and
        agents) at once: the node dies as if its machine went away."""
        flag = f"--node_manager_port={self.node_ports[node_id]}"
        processes = self._own_processes()
        raylets = [pid for pid, cmdline in processes.items()
                   if "raylet" in cmdline[0] and flag in cmdline]
        assert raylets, f"no raylet with {flag}"
        victims = set(raylets)
        while True:  # the process tree under the raylet
            children = {pid for pid in processes if _parent(pid) in victims} - victims
            if not children:
                break
            victims |= children
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _own_processes(self) -> dict[int, list[str]]:
        """pid -> command line of every live process that carries this cluster's marker."""
        needle = f"{MARKER}={self.marker}".encode()
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
                    found[int(entry.name)] = cmdline.split("\0")
            except OSError:  # exited meanwhile, or not ours to read
                continue
        return found

    def stop(self) -> list[int]:
        """Kill every process of this cluster; return those still alive (none, normally)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self._own_processes():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 5
            while self._own_processes() and time.monotonic() < deadline:
                time.sleep(0.2)
        return sorted(self._own_processes())


@pytest.fixture(scope="module", name="database")
def database_fixture() -> Iterator[str]:
    """The URL of a fresh PostgreSQL database for this module's tracking servers."""
    require_postgres()
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="module", name="tracking_server")
def tracking_server_fixture(database: str, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[MlflowServer]:
    """An MLflow tracking server over `database`, artifacts served from a temp dir."""
    server = MlflowServer(database, tmp_path_factory.mktemp("mlflow")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module", name="ray_cluster")
def ray_cluster_fixture() -> Iterator[RayCluster]:
    """A head and one worker node, one CPU each, so two trials must run on different nodes."""
    require_postgres()  # skip before starting Ray when the tests cannot run anyway
    # Ray puts Unix sockets under the temp dir: keep its path short (sun_path is 108 bytes).
    temp_dir = Path(tempfile.mkdtemp(prefix="mgray-", dir="/tmp"))
    cluster = RayCluster(temp_dir)
    try:
        yield cluster.start(workers=1)
    finally:
        leftover = cluster.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not leftover, f"Ray processes of the test cluster survived: {leftover}"
