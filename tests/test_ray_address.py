"""Which Ray a sweep joins (`--ray-address`, `$RAY_ADDRESS`), and an address that does not answer
as Ray failing in seconds with one line (issue 14, item 10: an unreachable `RAY_ADDRESS` left in
the environment made a "local" sweep hang for over 300 s)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.errors import UserError
from pipeline.ray_address import RayTarget, choose, host_and_port


@pytest.mark.fast
@pytest.mark.parametrize(("flag", "env", "expected"), [
    (None, {}, None),
    (None, {"RAY_ADDRESS": "10.0.0.5:6379"}, RayTarget("10.0.0.5:6379", "$RAY_ADDRESS")),
    ("head:6379", {"RAY_ADDRESS": "10.0.0.5:6379"}, RayTarget("head:6379", "--ray-address")),
    ("local", {"RAY_ADDRESS": "10.0.0.5:6379"}, None),  # the flag wins, and asks for a local Ray
    (None, {"RAY_ADDRESS": "local"}, None),
    (None, {"RAY_ADDRESS": "  "}, None),
    ("auto", {}, RayTarget("auto", "--ray-address")),
])
def test_choose_names_the_cluster_and_where_it_came_from(
        flag: str | None, env: dict[str, str], expected: RayTarget | None) -> None:
    assert choose(flag, env) == expected


@pytest.mark.fast
@pytest.mark.parametrize(("address", "endpoint"), [
    ("10.0.0.5:6380", ("10.0.0.5", 6380)),
    ("head", ("head", 6379)),  # Ray's default GCS port
    ("ray://head", ("head", 10001)),  # Ray Client's default port
    ("ray://head:1234", ("head", 1234)),
    ("[::1]:6379", ("::1", 6379)),
])
def test_host_and_port(address: str, endpoint: tuple[str, int]) -> None:
    assert host_and_port(RayTarget(address, "--ray-address")) == endpoint


@pytest.mark.fast
@pytest.mark.parametrize("address", ["http://head/x", "head:port", "head:99999", ":6379"])
def test_a_malformed_address_is_one_line(address: str) -> None:
    with pytest.raises(UserError, match="not a Ray address; expected host:port"):
        host_and_port(RayTarget(address, "$RAY_ADDRESS"))


@pytest.fixture
def refused_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def not_ray_port() -> Iterator[int]:
    """A loopback port that takes connections (the kernel's backlog) but never speaks Ray."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


@pytest.mark.parametrize("kind", ["refused", "not Ray"])
def test_an_unreachable_ray_address_in_the_environment_fails_within_10_s(
        kind: str, refused_port: int, not_ray_port: int, tmp_path: Path) -> None:
    port = refused_port if kind == "refused" else not_ray_port
    (tmp_path / "space.yaml").write_text("name: joined\nmodel: numpy_logreg\n"
                                         "params: {epochs: 1, learning_rate: 0.01}\n")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "tune", "space.yaml", "--dataset", "synthetic"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "RAY_ADDRESS": f"127.0.0.1:{port}"})
    assert time.monotonic() - started < 10
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(
        f"medgrid: error: $RAY_ADDRESS 127.0.0.1:{port}: "), result.stderr
    assert "unset RAY_ADDRESS (or pass --ray-address local)" in result.stderr
    # It says which cluster it was about to join, and why, before it tried.
    assert "joining the Ray cluster at" in result.stdout and "from $RAY_ADDRESS" in result.stdout
    assert not (tmp_path / "mlflow.db").exists()  # refused before any run existed
