"""OCTMNIST on disk: locate, fetch (+MD5), load and check MedMNIST's npz, and preprocess it the
homework's way (flatten to 784 features, divide by 256) into train/val/test splits."""

from __future__ import annotations

import functools
import hashlib
import http.client
import importlib.util
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import BinaryIO

import numpy as np

from pipeline.errors import UserError

N_CLASSES = 4
N_FEATURES = 28 * 28
# Synthetic files say so in their zip comment (np.load ignores it; the arrays stay MedMNIST's).
SYNTHETIC_MARKER = b"medgrid synthetic OCTMNIST-format data"


@dataclass(frozen=True)
class DatasetIdentity:
    """What a tracked run needs to say which data it saw."""

    name: str  # "octmnist" or "synthetic"
    md5: str  # MD5 of the npz file as read
    test_split: str  # "hw1" (529-image subset) or "full" (1,000 images)
    n_train: int
    n_val: int
    n_test: int


@dataclass(frozen=True)
class Splits:
    """Preprocessed arrays: x_* float32 (N, 784) in [0, 1); y_* int64 (N,) in 0..3."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    identity: DatasetIdentity


def add_bias(x: np.ndarray) -> np.ndarray:
    """Append the constant bias feature (1.0) that the homework's linear numpy models use."""
    return np.hstack([x, np.ones((x.shape[0], 1), dtype=x.dtype)])


# ------------------------------------------------------------------------ MedMNIST facts
SPLITS = ("train", "val", "test")
KEYS = tuple(f"{split}_{kind}" for split in SPLITS for kind in ("images", "labels"))
FILE_NAME = "octmnist.npz"
IMAGE_SHAPE = (28, 28)
# The homework's test subset: the first n test images of each class 0..3, in class order.
HW1_TEST_PER_CLASS = (182, 55, 42, 250)
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


# ---------------------------------------------------------------------------- read+check
def read_npz(path: Path, *, expect_octmnist: bool = False) -> dict[str, np.ndarray]:
    """Load MedMNIST's npz format and check keys, dtypes, shapes, label range and lengths."""
    path = Path(path)
    arrays = _load_arrays(path)
    for split in SPLITS:
        _check_split(path, split, arrays[f"{split}_images"], arrays[f"{split}_labels"])
    if expect_octmnist:
        expected = octmnist_info()["MD5"]
        got = file_md5(path)
        if got != expected:
            raise UserError(
                f"{path}: MD5 {got} is not MedMNIST's {FILE_NAME} ({expected}); "
                "download it again with: medgrid data fetch"
            )
    return arrays


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    """The six arrays of an npz file; unreadable / truncated / missing keys -> UserError."""
    if not path.is_file():
        raise UserError(f"{path}: no such file (expected MedMNIST's npz format)")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path}: not a readable npz archive, truncated or not a zip ({exc})"
                        ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise UserError(f"{path}: a single .npy array, expected an npz archive with {KEYS}")
    with archive:
        for key in KEYS:
            if key not in archive.files:
                raise UserError(f"{path}: missing key '{key}' (expected keys {', '.join(KEYS)})")
        try:
            return {key: archive[key] for key in KEYS}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise UserError(f"{path}: truncated or corrupt npz archive ({exc})") from None


def _check_split(path: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """One split's images and labels, against MedMNIST's format."""
    ikey, lkey = f"{split}_images", f"{split}_labels"
    if images.dtype != np.uint8:
        raise UserError(f"{path}: key '{ikey}' has dtype {images.dtype}, expected uint8")
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise UserError(f"{path}: key '{ikey}' has shape {images.shape}, expected (N, 28, 28)")
    if labels.dtype.kind not in "ui":
        raise UserError(f"{path}: key '{lkey}' has dtype {labels.dtype}, expected integers")
    if labels.ndim != 2 or labels.shape[1] != 1:
        raise UserError(f"{path}: key '{lkey}' has shape {labels.shape}, expected (N, 1)")
    if len(labels) != len(images):
        raise UserError(
            f"{path}: key '{lkey}' has {len(labels)} labels but '{ikey}' has "
            f"{len(images)} images, expected the same number"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= N_CLASSES):
        raise UserError(
            f"{path}: key '{lkey}' has labels in {labels.min()}..{labels.max()}, "
            f"expected 0..{N_CLASSES - 1}"
        )


# ------------------------------------------------------------------------ homework splits
def load_splits(path: Path, *, test_split: str = "hw1", name: str | None = None) -> Splits:
    """Read, check and preprocess the homework's way: flatten to 784, divide by 256 (float32).

    test_split "hw1" is the homework's 529-image subset (first 182/55/42/250 test images of
    classes 0-3, in class order); "full" is the whole test set.
    """
    if test_split not in ("hw1", "full"):
        raise UserError(f"test split {test_split!r} is not one of 'hw1', 'full'")
    path = Path(path)
    arrays = read_npz(path)
    x_test, y_test = arrays["test_images"], arrays["test_labels"].reshape(-1)
    if test_split == "hw1":
        x_test, y_test = _hw1_subset(path, x_test, y_test)
    md5 = file_md5(path)
    identity = DatasetIdentity(
        name=name or _identify(path, md5),
        md5=md5,
        test_split=test_split,
        n_train=len(arrays["train_labels"]),
        n_val=len(arrays["val_labels"]),
        n_test=len(y_test),
    )
    return Splits(
        x_train=_features(arrays["train_images"]),
        y_train=_targets(arrays["train_labels"]),
        x_val=_features(arrays["val_images"]),
        y_val=_targets(arrays["val_labels"]),
        x_test=_features(x_test),
        y_test=_targets(y_test),
        identity=identity,
    )


def _features(images: np.ndarray) -> np.ndarray:
    x = images.reshape(len(images), N_FEATURES).astype(np.float32)
    x /= 256  # not 255: the homework's loader did this, so pixels land in [0, 1)
    return x


def _targets(labels: np.ndarray) -> np.ndarray:
    return labels.reshape(-1).astype(np.int64)


def _hw1_subset(
    path: Path, images: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The homework's test subset: first n images of each class, concatenated in class order."""
    picks = []
    for cls, wanted in enumerate(HW1_TEST_PER_CLASS):
        found = np.flatnonzero(labels == cls)
        if len(found) < wanted:
            raise UserError(
                f"{path}: key 'test_labels' has {len(found)} images of class {cls}, the "
                f"homework's test subset needs {wanted} (use the full test split instead)"
            )
        picks.append(found[:wanted])
    index = np.concatenate(picks)
    return images[index], labels[index]


def _identify(path: Path, md5: str) -> str:
    """'octmnist' for MedMNIST's file, 'synthetic' for ours, else the file's stem."""
    if md5 == octmnist_info()["MD5"]:
        return "octmnist"
    try:
        with zipfile.ZipFile(path) as archive:
            # The marker lives in the zip comment, which np.load ignores: the arrays stay
            # exactly MedMNIST's six keys.
            if archive.comment.startswith(SYNTHETIC_MARKER):
                return "synthetic"
    except (OSError, zipfile.BadZipFile):
        pass
    return path.stem


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


def describe(path: Path, *, expect_octmnist: bool = False) -> str:
    """Human-readable summary: file, MD5, and per split shape, dtype and class counts."""
    path = Path(path)
    arrays = read_npz(path, expect_octmnist=expect_octmnist)
    md5 = file_md5(path)
    which = {"octmnist": "MedMNIST's octmnist.npz", "synthetic": "medgrid's synthetic stand-in"}
    what = which.get(_identify(path, md5), "not MedMNIST's octmnist.npz")
    lines = [f"file: {path}", f"md5:  {md5} ({what})"]
    for split in SPLITS:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        counts = np.bincount(labels.reshape(-1), minlength=N_CLASSES)
        lines.append(
            f"{split:<5} images {tuple(images.shape)} {images.dtype}, labels "
            f"{tuple(labels.shape)} {labels.dtype}, classes 0-3: "
            + " / ".join(f"{int(c):,}" for c in counts)
        )
    return "\n".join(lines)
