"""MedMNIST's npz format read and checked, and preprocessed the homework's way (flatten to 784
features, divide by 256) into train/val/test splits, and the data a sweep trains on (which
file, a seeded training subset). Finding and downloading the file:
`pipeline.data_source`."""

from __future__ import annotations

import math
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import data_source
from pipeline.errors import UserError

N_CLASSES = 4
CLASS_NAMES = ("CNV", "DME", "drusen", "normal")  # OCTMNIST's labels 0-3
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
IMAGE_SHAPE = (28, 28)
# The homework's test subset: the first n test images of each class 0..3, in class order.
HW1_TEST_PER_CLASS = (182, 55, 42, 250)


# ---------------------------------------------------------------------------- read+check
def read_npz(path: Path, *, expect_octmnist: bool = False) -> dict[str, np.ndarray]:
    """Load MedMNIST's npz format and check keys, dtypes, shapes, label range and lengths."""
    path = Path(path)
    arrays = _load_arrays(path)
    for split in SPLITS:
        _check_split(path, split, arrays[f"{split}_images"], arrays[f"{split}_labels"])
    if expect_octmnist:
        expected = data_source.octmnist_info()["MD5"]
        got = data_source.file_md5(path)
        if got != expected:
            raise UserError(
                f"{path}: MD5 {got} is not MedMNIST's {data_source.FILE_NAME} ({expected}); "
                "download it again with: medgrid data fetch"
            )
    return arrays


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    """The six arrays of an npz file; unreadable / truncated / missing keys -> UserError."""
    if not path.is_file():
        raise UserError(f"{path}: no such file (expected MedMNIST's npz format)")
    with open(path, "rb") as handle:
        if handle.read(len(NPY_MAGIC)) == NPY_MAGIC:
            raise UserError(f"{path}: a single .npy array, expected an npz archive with {KEYS}")
    _check_declared_sizes(path)
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


NPY_MAGIC = b"\x93NUMPY"
# zlib's deflate expands at most about 1032:1; what a member can hold, whatever its header says.
DEFLATE_MAX_RATIO = 1032
_ZIP_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError,
               NotImplementedError, struct.error)


def _check_declared_sizes(path: Path) -> None:
    """Refuse an array whose npy header declares more bytes than its zip member can hold,
    before numpy allocates them: a 200-byte file may declare a (10**12, 28, 28) array, and
    numpy allocates the whole array before it reads (and finds too little) data."""
    on_disk = path.stat().st_size
    try:
        archive = zipfile.ZipFile(path)
    except _ZIP_ERRORS as exc:
        raise UserError(f"{path}: not a readable npz archive, truncated or not a zip ({exc})"
                        ) from None
    with archive:
        for key in KEYS:
            try:
                info = archive.getinfo(f"{key}.npy")
            except KeyError:
                continue  # reported, with the expected keys, after np.load
            try:
                shape, dtype, header = _member_header(archive, info)
            except _ZIP_ERRORS as exc:
                raise UserError(f"{path}: truncated or corrupt npz archive: key '{key}' "
                                f"({exc})") from None
            held = _member_capacity(path, key, info, on_disk) - header
            declared = math.prod(shape) * dtype.itemsize
            if not dtype.hasobject and declared > held:  # object arrays: np.load refuses
                raise UserError(f"{path}: key '{key}' declares shape {shape} {dtype} "
                                f"({declared:,} bytes) but holds at most {max(held, 0):,} "
                                "bytes; expected a shape that fits its data (the file is "
                                "corrupt or not MedMNIST's)")


def _member_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo
                   ) -> tuple[tuple[int, ...], np.dtype, int]:
    """A member's declared shape and dtype, and the length of its npy header."""
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        else:  # 2.0, or 3.0 (the same header, utf-8; read_magic refuses other versions)
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
        return shape, dtype, member.tell()


def _member_capacity(path: Path, key: str, info: zipfile.ZipInfo, on_disk: int) -> int:
    """The most bytes a member can decompress to: its declared size, bounded by the bytes the
    file has (the declared sizes in a zip's directory are themselves only claims)."""
    compressed = min(info.compress_size, on_disk)
    if info.compress_type == zipfile.ZIP_STORED:
        return min(info.file_size, compressed)
    if info.compress_type == zipfile.ZIP_DEFLATED:
        return min(info.file_size, compressed * DEFLATE_MAX_RATIO)
    raise UserError(f"{path}: key '{key}' uses zip compression method {info.compress_type}; "
                    "expected stored or deflated members, as numpy writes")


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
def load_splits(path: Path, *, test_split: str = "hw1", name: str | None = None,
                limit_train: int | None = None) -> Splits:
    """Read, check and preprocess the homework's way: flatten to 784, divide by 256 (float32).

    test_split "hw1" is the homework's 529-image subset (first 182/55/42/250 test images of
    classes 0-3, in class order); "full" is the whole test set. `limit_train` keeps a seeded
    random subset of the training set (`train_subset`), taken before the conversion to float.
    """
    if test_split not in ("hw1", "full"):
        raise UserError(f"test split {test_split!r} is not one of 'hw1', 'full'")
    path = Path(path)
    arrays = read_npz(path)
    x_test, y_test = arrays["test_images"], arrays["test_labels"].reshape(-1)
    if test_split == "hw1":
        x_test, y_test = _hw1_subset(path, x_test, y_test)
    _check_not_empty(path, {"train": len(arrays["train_labels"]), "val": len(arrays["val_labels"]),
                            "test": len(y_test)})
    md5 = data_source.file_md5(path)
    x_train, y_train = arrays["train_images"], arrays["train_labels"]
    if limit_train is not None and limit_train < len(y_train):
        keep = train_subset(len(y_train), limit_train)
        x_train, y_train = x_train[keep], y_train[keep]
    identity = DatasetIdentity(
        name=name or _identify(path, md5),
        md5=md5,
        test_split=test_split,
        n_train=len(y_train),
        n_val=len(arrays["val_labels"]),
        n_test=len(y_test),
    )
    return Splits(
        x_train=_features(x_train),
        y_train=_targets(y_train),
        x_val=_features(arrays["val_images"]),
        y_val=_targets(arrays["val_labels"]),
        x_test=_features(x_test),
        y_test=_targets(y_test),
        identity=identity,
    )


def _check_not_empty(path: Path, sizes: dict[str, int]) -> None:
    """Refuse a split without images: an empty train split cannot train (it used to show up as
    a diverged or crashed trial), an empty val or test split gives accuracies of NaN."""
    for split, n in sizes.items():
        if n == 0:
            raise UserError(f"{path}: split '{split}' has 0 images (key '{split}_images'); "
                            "expected at least one image in each of train, val and test")


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
    if md5 == data_source.octmnist_info()["MD5"]:
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


def describe(path: Path, *, expect_octmnist: bool = False) -> str:
    """Human-readable summary: file, MD5, and per split shape, dtype and class counts."""
    path = Path(path)
    arrays = read_npz(path, expect_octmnist=expect_octmnist)
    md5 = data_source.file_md5(path)
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


# ------------------------------------------------------------------------ a sweep's data
DATASETS = ("octmnist", "synthetic")


def load_dataset(dataset: str, data: Path | None = None, test_split: str = "hw1",
                 limit_train: int | None = None) -> Splits:
    """The splits a sweep trains on, loaded once (on the driver): the file `data`, else the
    cached OCTMNIST, else (`dataset="synthetic"`) the full-size synthetic stand-in, written
    to the cache on first use; `limit_train` keeps a seeded random subset of the training set."""
    if dataset not in DATASETS:
        raise UserError(f"--dataset {dataset!r}; expected octmnist or synthetic")
    if data is not None:
        path = data_source.resolve_data_path(data)
    elif dataset == "synthetic":
        from pipeline import synthetic  # imports this module: only when it is needed

        path = data_source.default_cache_dir() / "synthetic_octmnist.npz"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            print(f"[medgrid] writing the full-size synthetic stand-in to {path}", flush=True)
            synthetic.synthesize(path, seed=0)
    else:
        path = data_source.resolve_data_path(None)
    return load_splits(path, test_split=test_split, limit_train=limit_train)


def train_subset(n_train: int, n: int) -> np.ndarray:
    """The sorted indices of a seeded random subset of `n` of `n_train` training samples (for
    quick runs); the same `n` gives the same subset, so a resumed sweep trains on what it
    started with."""
    return np.sort(np.random.default_rng(0).choice(n_train, n, replace=False))
