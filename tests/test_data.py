"""The data layer: MedMNIST's npz format checks, the MD5 check of the real file, the homework's
splits, and the summary `medgrid data info` prints."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipeline import data, data_source
from pipeline.errors import UserError

pytestmark = pytest.mark.fast  # no Ray, no MLflow: `make test-fast`

SPLIT_SIZES = {"train": 12, "val": 8, "test": 8}


def valid_arrays() -> dict[str, np.ndarray]:
    """Small arrays in MedMNIST's format, every class present in every split."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in SPLIT_SIZES.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n, dtype=np.uint8) % 4).reshape(n, 1)
    return arrays


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez_compressed(path, **arrays)
    return path


def assert_one_line_error(excinfo: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


# ------------------------------------------------------------------------ format checks
def test_read_npz_round_trip(tmp_path: Path) -> None:
    arrays = valid_arrays()
    loaded = data.read_npz(write_npz(tmp_path / "ok.npz", arrays))
    assert set(loaded) == set(data.KEYS)
    for key, array in arrays.items():
        np.testing.assert_array_equal(loaded[key], array)


def _drop(arrays: dict, key: str) -> None:
    del arrays[key]


MALFORMED = {
    "missing key": ("val_labels", lambda a: _drop(a, "val_labels")),
    "float images": ("train_images", lambda a: a.update(train_images=a["train_images"] / 255)),
    "int16 images": ("test_images", lambda a: a.update(test_images=a["test_images"].astype(
        np.int16))),
    "images not 28x28": ("val_images", lambda a: a.update(val_images=a["val_images"][:, :, :27])),
    "flat images": ("train_images", lambda a: a.update(train_images=a["train_images"].reshape(
        12, 784))),
    "labels not (N, 1)": ("train_labels", lambda a: a.update(train_labels=a["train_labels"][:, 0])),
    "float labels": ("test_labels", lambda a: a.update(test_labels=a["test_labels"] * 1.0)),
    "label 4": ("val_labels", lambda a: a.update(val_labels=a["val_labels"] + 1)),
    "label -1": ("train_labels", lambda a: a.update(train_labels=a["train_labels"].astype(
        np.int64) - 1)),
    "lengths disagree": ("test_labels", lambda a: a.update(test_labels=a["test_labels"][:-1])),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_file_names_file_and_key(tmp_path: Path, case: str) -> None:
    key, damage = MALFORMED[case]
    arrays = valid_arrays()
    damage(arrays)
    path = write_npz(tmp_path / "bad.npz", arrays)
    with pytest.raises(UserError) as excinfo:
        data.read_npz(path)
    assert_one_line_error(excinfo, str(path), key)


def test_text_file_is_not_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "notes.npz"
    path.write_text("not an archive\n")
    with pytest.raises(UserError) as excinfo:
        data.read_npz(path)
    assert_one_line_error(excinfo, str(path), "npz")


def test_single_npy_array_is_not_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "array.npz"
    with open(path, "wb") as handle:
        np.save(handle, np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(UserError) as excinfo:
        data.read_npz(path)
    assert_one_line_error(excinfo, str(path), "npz")


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_file(tmp_path: Path, keep: float) -> None:
    whole = write_npz(tmp_path / "whole.npz", valid_arrays()).read_bytes()
    path = tmp_path / "cut.npz"
    path.write_bytes(whole[: int(len(whole) * keep)])
    with pytest.raises(UserError) as excinfo:
        data.read_npz(path)
    assert_one_line_error(excinfo, str(path))


def test_corrupt_member_data(tmp_path: Path) -> None:
    raw = bytearray(write_npz(tmp_path / "x.npz", valid_arrays()).read_bytes())
    raw[200:400] = bytes(200)  # inside the first member's compressed stream
    path = tmp_path / "corrupt.npz"
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError) as excinfo:
        data.read_npz(path)
    assert_one_line_error(excinfo, str(path), "corrupt")


def write_declaring(path: Path, key: str, shape: tuple[int, ...],
                    compression: int = zipfile.ZIP_STORED) -> Path:
    """A valid file but for `key`, whose npy header declares `shape` over 64 bytes of data;
    the zip itself is sound (CRCs and sizes match), as a hostile file's would be."""
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, array in valid_arrays().items():
            member = io.BytesIO()
            if name == key:
                np.lib.format.write_array_header_1_0(member, {
                    "descr": "|u1", "fortran_order": False, "shape": shape})
                member.write(bytes(64))
            else:
                np.lib.format.write_array(member, array)
            archive.writestr(f"{name}.npy", member.getvalue())
    return path


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED],
                         ids=["stored", "deflated"])
def test_huge_declared_shape_is_refused_before_allocating(tmp_path: Path,
                                                          compression: int) -> None:
    # 784 TB declared in a 2 kB file: numpy would allocate it before reading (MemoryError).
    path = write_declaring(tmp_path / "huge.npz", "val_images", (10**12, 28, 28), compression)
    with pytest.raises(UserError) as excinfo:
        data.read_npz(path)
    assert_one_line_error(excinfo, str(path), "key 'val_images' declares shape "
                          "(1000000000000, 28, 28) uint8 (784,000,000,000,000 bytes) but holds "
                          "at most", "expected a shape that fits its data")


def test_other_zip_compression_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lzma.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_LZMA) as archive:
        for name, array in valid_arrays().items():
            member = io.BytesIO()
            np.lib.format.write_array(member, array)
            archive.writestr(f"{name}.npy", member.getvalue())
    with pytest.raises(UserError) as excinfo:
        data.read_npz(path)
    assert_one_line_error(excinfo, str(path), "compression method 14",
                          "expected stored or deflated")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such file"):
        data.read_npz(tmp_path / "absent.npz")


# ---------------------------------------------------------------------------------- MD5
def test_expect_octmnist_rejects_other_md5(tiny_npz: Path) -> None:
    with pytest.raises(UserError) as excinfo:
        data.read_npz(tiny_npz, expect_octmnist=True)
    assert_one_line_error(excinfo, str(tiny_npz), "MD5", data_source.octmnist_info()["MD5"])


def pretend_octmnist(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """Make MedMNIST's published MD5 equal this file's."""
    info = dict(data_source.octmnist_info(), MD5=data_source.file_md5(path))
    monkeypatch.setattr(data_source, "octmnist_info", lambda: info)


def test_file_with_medmnists_md5_is_octmnist(tiny_npz: Path, monkeypatch) -> None:
    pretend_octmnist(monkeypatch, tiny_npz)
    data.read_npz(tiny_npz, expect_octmnist=True)
    assert data.load_splits(tiny_npz).identity.name == "octmnist"


# ------------------------------------------------------------------------ homework splits
def test_load_splits_preprocesses_like_the_homework(tiny_npz: Path, tiny_splits) -> None:
    raw = data.read_npz(tiny_npz)
    s = tiny_splits
    assert s.x_train.dtype == np.float32 and s.x_train.shape == (400, 784)
    assert s.y_train.dtype == np.int64 and s.y_train.shape == (400,)
    np.testing.assert_array_equal(s.x_val * 256, raw["val_images"].reshape(100, 784))
    np.testing.assert_array_equal(s.y_val, raw["val_labels"][:, 0])
    assert 0 <= s.x_train.min() and s.x_train.max() < 1
    assert s.identity == data.DatasetIdentity(
        name="synthetic", md5=data_source.file_md5(tiny_npz), test_split="hw1",
        n_train=400, n_val=100, n_test=529)


def test_hw1_subset_is_first_images_of_each_class_in_order(tiny_npz: Path, tiny_splits) -> None:
    raw = data.read_npz(tiny_npz)
    labels = raw["test_labels"][:, 0]
    expected_y = np.repeat([0, 1, 2, 3], data.HW1_TEST_PER_CLASS)
    np.testing.assert_array_equal(tiny_splits.y_test, expected_y)
    first = np.concatenate([np.flatnonzero(labels == c)[:n]
                            for c, n in enumerate(data.HW1_TEST_PER_CLASS)])
    np.testing.assert_array_equal(tiny_splits.x_test * 256,
                                  raw["test_images"][first].reshape(-1, 784))


def test_full_test_split_keeps_every_image_in_file_order(tiny_npz: Path) -> None:
    splits = data.load_splits(tiny_npz, test_split="full")
    raw = data.read_npz(tiny_npz)
    np.testing.assert_array_equal(splits.y_test, raw["test_labels"][:, 0])
    assert splits.identity.n_test == 1000 and splits.identity.test_split == "full"


def test_hw1_subset_needs_enough_images_per_class(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "small.npz", valid_arrays())
    with pytest.raises(UserError) as excinfo:
        data.load_splits(path)
    assert_one_line_error(excinfo, str(path), "test_labels", "182")
    assert data.load_splits(path, test_split="full").identity.n_test == 8


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_empty_split_is_refused(tmp_path: Path, split: str) -> None:
    # An empty train split trained as "diverged" (numpy) or crashed (torch); empty val or test
    # splits gave NaN accuracies and exit 0.
    arrays = valid_arrays()
    arrays[f"{split}_images"] = arrays[f"{split}_images"][:0]
    arrays[f"{split}_labels"] = arrays[f"{split}_labels"][:0]
    path = write_npz(tmp_path / "empty.npz", arrays)
    with pytest.raises(UserError) as excinfo:
        data.load_splits(path, test_split="full")
    assert_one_line_error(excinfo, str(path), f"split '{split}' has 0 images",
                          "expected at least one image in each of train, val and test")


def test_unknown_test_split(tiny_npz: Path) -> None:
    with pytest.raises(UserError, match="'hw2'"):
        data.load_splits(tiny_npz, test_split="hw2")


def test_identity_name_defaults_to_stem_and_can_be_given(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "my_scans.npz", valid_arrays())
    assert data.load_splits(path, test_split="full").identity.name == "my_scans"
    named = data.load_splits(path, test_split="full", name="retina-v2")
    assert named.identity.name == "retina-v2"


# --------------------------------------------------------------------------- locate
def test_describe_lists_shapes_counts_and_md5(tiny_npz: Path) -> None:
    text = data.describe(tiny_npz)
    counts = np.bincount(data.read_npz(tiny_npz)["train_labels"][:, 0], minlength=4)
    assert data_source.file_md5(tiny_npz) in text
    assert "(400, 28, 28) uint8" in text
    assert " / ".join(str(c) for c in counts) in text
    assert "250 / 250 / 250 / 250" in text


# ------------------------------------------------------------------------ a sweep's data
@pytest.mark.parametrize("n", [1, 50, 399])
def test_a_training_subset_is_seeded_sorted_and_recorded(n: int, tiny_npz: Path) -> None:
    full = data.load_splits(tiny_npz)
    subset = data.load_splits(tiny_npz, limit_train=n)
    again = data.load_splits(tiny_npz, limit_train=n)
    assert len(subset.y_train) == len(subset.x_train) == subset.identity.n_train == n
    np.testing.assert_array_equal(subset.x_train, again.x_train)  # the same n, the same images
    rows = [int(np.flatnonzero((full.x_train == row).all(axis=1))[0])
            for row in subset.x_train[:5]]
    assert rows == sorted(rows)  # kept in file order
    np.testing.assert_array_equal(subset.y_train[:5], full.y_train[rows])  # labels go along
    np.testing.assert_array_equal(subset.x_val, full.x_val)  # val and test are untouched
    np.testing.assert_array_equal(subset.x_test, full.x_test)


@pytest.mark.parametrize("n", [400, 10_000])
def test_a_subset_as_large_as_the_training_set_is_the_training_set(n: int, tiny_npz: Path
                                                                   ) -> None:
    full, subset = data.load_splits(tiny_npz), data.load_splits(tiny_npz, limit_train=n)
    assert subset.identity == full.identity
    np.testing.assert_array_equal(subset.x_train, full.x_train)


def test_a_sweep_loads_the_named_file_and_its_subset(tiny_npz: Path) -> None:
    splits = data.load_dataset("octmnist", tiny_npz, "full", limit_train=100)
    assert (splits.identity.n_train, splits.identity.n_test) == (100, 1000)
    assert splits.identity.name == "synthetic"  # the file says what it is, whatever --dataset


def test_an_unknown_dataset_is_one_user_error(tiny_npz: Path) -> None:
    with pytest.raises(UserError, match="--dataset 'mnist'; expected octmnist or synthetic"):
        data.load_dataset("mnist", tiny_npz)
