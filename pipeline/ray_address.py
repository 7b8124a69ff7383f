"""Which Ray a sweep joins, and a check, in seconds, that a cluster's address answers as Ray.

Left to itself, `ray.init(address=...)` retries an address that is down or is not Ray for minutes
(over 300 s for a blackholed `RAY_ADDRESS`; a port that answers but is not Ray's GCS never gives
up). Before the seconds of importing Ray, the address is probed: a TCP connection, then Ray's own
GCS client asked for the cluster's id in a short-lived child process, where Ray's connection
timeouts can be made short without shortening those of the sweep's own driver.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from urllib.parse import urlsplit

from pipeline.errors import UserError

CONNECT_TIMEOUT_S = 4.0
GCS_CHECK_TIMEOUT_S = 5.0
DEFAULT_GCS_PORT = 6379
DEFAULT_CLIENT_PORT = 10001  # Ray Client's server (`ray://` addresses)

# Run in a child process: Ray reads these timeouts once, when its core library loads.
_GCS_CHECK = """
import sys
from ray._raylet import GcsClient
try:
    GcsClient(address=sys.argv[1])
except Exception as error:
    print(f"{type(error).__name__}: {error}", file=sys.stderr)
    sys.exit(1)
"""
_GCS_CHECK_ENV = {"RAY_py_gcs_connect_timeout_s": "2", "RAY_gcs_rpc_server_connect_timeout_s": "2"}


@dataclass(frozen=True)
class RayTarget:
    """A cluster to join, and where its address came from (for the messages)."""

    address: str
    source: str  # "--ray-address" or "$RAY_ADDRESS"

    @property
    def joins_local_default(self) -> bool:
        return self.address == "auto"  # the cluster `ray start` last left on this machine


def choose(flag: str | None, environ: dict[str, str] | None = None) -> RayTarget | None:
    """The cluster `--ray-address` or `$RAY_ADDRESS` names; None for a local Ray of the sweep's
    own (neither set, or either says "local")."""
    environ = os.environ if environ is None else environ
    for address, source in ((flag, "--ray-address"), (environ.get("RAY_ADDRESS"), "$RAY_ADDRESS")):
        if address and address.strip():
            address = address.strip()
            return None if address == "local" else RayTarget(address, source)
    return None


def host_and_port(target: RayTarget) -> tuple[str, int]:
    """The TCP endpoint of `host[:port]` or `ray://host[:port]`; one line if it is malformed."""
    client = target.address.startswith("ray://")
    try:
        parts = urlsplit(target.address if "://" in target.address else f"//{target.address}")
        host, port = parts.hostname, parts.port
    except ValueError as error:
        host, port = None, error
    if not host or isinstance(port, ValueError) or parts.path not in ("", "/"):
        raise UserError(f"{target.source} {target.address}: not a Ray address; expected host:port "
                        f"(e.g. 10.0.0.5:{DEFAULT_GCS_PORT}), ray://host:port or 'local'")
    return host, port or (DEFAULT_CLIENT_PORT if client else DEFAULT_GCS_PORT)


def check_reachable(target: RayTarget) -> None:
    """Raise UserError, within about 10 s, unless `target` answers as a Ray cluster."""
    if target.joins_local_default:
        return  # Ray resolves it from its own files and fails at once when there is none
    host, port = host_and_port(target)
    hint = ("expected the address of a running Ray head (`ray start --head` prints it)" +
            ("; unset RAY_ADDRESS (or pass --ray-address local) for a local Ray of the sweep's "
             "own" if target.source == "$RAY_ADDRESS" else ""))
    where = f"{target.source} {target.address}"
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except socket.gaierror:
        raise UserError(f"{where}: unknown host {host!r}; {hint}") from None
    except TimeoutError:
        raise UserError(f"{where}: no answer from {host}:{port} within "
                        f"{CONNECT_TIMEOUT_S:.0f} s; {hint}") from None
    except OSError as error:
        raise UserError(f"{where}: cannot connect to {host}:{port} "
                        f"({error.strerror or error}); {hint}") from None
    if target.address.startswith("ray://"):
        return  # Ray Client's server, not a GCS: the TCP answer is all that can be asked here
    if not _answers_as_gcs(f"{host}:{port}"):
        raise UserError(f"{where}: {host}:{port} answers, but not as a Ray cluster's head (its "
                        f"GCS port); {hint}")


def _answers_as_gcs(address: str) -> bool:
    try:
        check = subprocess.run([sys.executable, "-c", _GCS_CHECK, address],
                               env={**os.environ, **_GCS_CHECK_ENV}, capture_output=True,
                               timeout=GCS_CHECK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return False
    return check.returncode == 0
