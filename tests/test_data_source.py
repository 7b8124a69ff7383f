"""Finding and fetching octmnist.npz: the file's MD5, the cache directory, which file a command
reads, and the verified atomic download (against a local HTTP server, never the network)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_data import assert_one_line_error

from pipeline import data_source
from pipeline.errors import UserError

pytestmark = pytest.mark.fast  # no Ray, no MLflow: `make test-fast`


def test_file_md5_matches_hashlib(tiny_npz: Path) -> None:
    assert data_source.file_md5(tiny_npz) == hashlib.md5(tiny_npz.read_bytes()).hexdigest()




# --------------------------------------------------------------------------- locate
def test_default_cache_dir(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDGRID_DATA_DIR", str(tmp_path / "cache"))
    assert data_source.default_cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("MEDGRID_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data_source.default_cache_dir() == tmp_path / ".medmnist"


def test_resolve_data_path(monkeypatch, tmp_path: Path, tiny_npz: Path) -> None:
    monkeypatch.setenv("MEDGRID_DATA_DIR", str(tmp_path))
    assert data_source.resolve_data_path(tiny_npz) == tiny_npz
    with pytest.raises(UserError, match="does not exist"):
        data_source.resolve_data_path(tmp_path / "absent.npz")
    with pytest.raises(UserError) as excinfo:
        data_source.resolve_data_path(None)
    assert_one_line_error(excinfo, "medgrid data fetch", "medgrid data synth")
    shutil.copy(tiny_npz, tmp_path / "octmnist.npz")
    assert data_source.resolve_data_path(None) == tmp_path / "octmnist.npz"


# --------------------------------------------------------------------------------- fetch
@pytest.fixture
def served(tmp_path_factory: pytest.TempPathFactory, tiny_npz: Path) -> Iterator[str]:
    """URL of tiny_npz on a throwaway HTTP server on 127.0.0.1."""
    root = tmp_path_factory.mktemp("server")
    shutil.copy(tiny_npz, root / "octmnist.npz")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/octmnist.npz"
    server.shutdown()
    server.server_close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/octmnist.npz"


def test_fetch_saves_verified_file(tmp_path: Path, served: str, tiny_npz: Path) -> None:
    dest = tmp_path / "cache" / "nested"
    path = data_source.fetch(dest, url=served, md5=data_source.file_md5(tiny_npz), timeout=5)
    assert path == dest / "octmnist.npz"
    assert path.read_bytes() == tiny_npz.read_bytes()
    assert [p.name for p in dest.iterdir()] == ["octmnist.npz"]


def test_fetch_wrong_md5_leaves_nothing(tmp_path: Path, served: str) -> None:
    with pytest.raises(UserError) as excinfo:
        data_source.fetch(tmp_path, url=served, md5="0" * 32, timeout=5)
    assert_one_line_error(excinfo, "MD5", "0" * 32)
    assert list(tmp_path.iterdir()) == []


def test_fetch_server_down_says_what_to_do(tmp_path: Path) -> None:
    url = closed_port_url()
    with pytest.raises(UserError) as excinfo:
        data_source.fetch(tmp_path, url=url, md5="0" * 32, timeout=2)
    assert_one_line_error(excinfo, url, str(tmp_path / "octmnist.npz"), "medgrid data synth")
    assert list(tmp_path.iterdir()) == []


def test_fetch_missing_url_is_an_error(tmp_path: Path, served: str) -> None:
    with pytest.raises(UserError, match="404"):
        data_source.fetch(tmp_path, url=served.replace("octmnist", "nothing"), md5="0" * 32,
                          timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_fetch_skips_download_when_file_is_already_there(tmp_path: Path, tiny_npz: Path) -> None:
    shutil.copy(tiny_npz, tmp_path / "octmnist.npz")
    # A closed port: the call succeeds only if it never touches the network.
    path = data_source.fetch(tmp_path, url=closed_port_url(),
                             md5=data_source.file_md5(tiny_npz), timeout=2)
    assert path == tmp_path / "octmnist.npz"
