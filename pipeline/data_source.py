"""Where MedMNIST's octmnist.npz lives and how to get it: MedMNIST's metadata (URL, MD5), the
cache directory, the verified atomic download, and finding the file a command should read."""

from __future__ import annotations

import functools
import hashlib
import http.client
import importlib.util
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import BinaryIO

from pipeline.errors import UserError

FILE_NAME = "octmnist.npz"
SYNTH_HINT = "or use the synthetic stand-in: medgrid data synth --out FILE"


@functools.lru_cache(maxsize=1)
def _medmnist_info() -> ModuleType:
    """MedMNIST's `info` module (URLs, MD5s, default root), without its package __init__.

    `import medmnist.info` runs medmnist/__init__.py, which imports torch and the dataset
    classes (2 s, and noise on stdout when torchvision is broken); info.py itself is plain data.
    """
    spec = importlib.util.find_spec("medmnist")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "info.py"
        if path.is_file():
            file_spec = importlib.util.spec_from_file_location("_medgrid_medmnist_info", path)
            if file_spec and file_spec.loader:
                module = importlib.util.module_from_spec(file_spec)
                file_spec.loader.exec_module(module)
                return module
    import medmnist.info  # layout changed: fall back to the ordinary (slower) import

    return medmnist.info


def octmnist_info() -> dict:
    """MedMNIST's metadata for OCTMNIST (url, MD5, sizes)."""
    return _medmnist_info().INFO["octmnist"]


def default_cache_dir() -> Path:
    """Where octmnist.npz lives: $MEDGRID_DATA_DIR if set, else MedMNIST's root ~/.medmnist."""
    env = os.environ.get("MEDGRID_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path("~/.medmnist").expanduser()


def file_md5(path: Path) -> str:
    """Hex MD5 of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------- fetch
def fetch(
    dest_dir: Path, *, url: str | None = None, md5: str | None = None, timeout: float = 10.0
) -> Path:
    """Download octmnist.npz into `dest_dir`, check its MD5 and move it into place atomically."""
    info = octmnist_info()
    url = url or info["url"]
    md5 = md5 or info["MD5"]
    dest_dir = Path(dest_dir)
    target = dest_dir / FILE_NAME
    if target.is_file() and file_md5(target) == md5:
        return target
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create data directory {dest_dir}: {exc.strerror}") from None
    fd, tmp_name = tempfile.mkstemp(prefix=f".{FILE_NAME}.", suffix=".part", dir=dest_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            got = _download(url, out, timeout=timeout, target=target)
        if got != md5:
            raise UserError(
                f"downloaded {url} has MD5 {got}, expected {md5}: the download is corrupt "
                f"or the file changed upstream; nothing was saved to {target}"
            )
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a data file is normally world-readable
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _download(url: str, out: BinaryIO, *, timeout: float, target: Path) -> str:
    """Stream `url` into `out`; the MD5 of what was written. Network trouble -> UserError."""
    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # URLError's str() wraps its reason in "<urlopen error ...>"; HTTPError's has the code.
        reason = exc.reason if type(exc) is urllib.error.URLError else exc
        raise UserError(
            f"cannot download {url} ({type(exc).__name__}: {reason}); place MedMNIST's "
            f"{FILE_NAME} at {target} by hand, {SYNTH_HINT}"
        ) from None
    return digest.hexdigest()


# ------------------------------------------------------------------------------ locate
def resolve_data_path(data: Path | None) -> Path:
    """The explicit file if given (must exist), else the cached octmnist.npz if present."""
    if data is not None:
        data = Path(data)
        if not data.is_file():
            raise UserError(f"data file {data} does not exist (expected an npz in MedMNIST's "
                            "format)")
        return data
    cached = default_cache_dir() / FILE_NAME
    if cached.is_file():
        return cached
    raise UserError(
        f"no data file given and {cached} does not exist: run `medgrid data fetch` (or place "
        f"MedMNIST's {FILE_NAME} there), pass --data FILE, {SYNTH_HINT}"
    )
