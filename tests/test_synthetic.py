"""The synthetic stand-in: MedMNIST's exact npz format, OCTMNIST's proportions, determinism."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipeline import data, data_source, synthetic
from pipeline.errors import UserError

pytestmark = pytest.mark.fast  # no Ray, no MLflow: `make test-fast`

SMALL = {"n_train": 60, "n_val": 30, "n_test": 20}


def test_file_has_exactly_medmnists_format(tiny_npz: Path) -> None:
    with np.load(tiny_npz, allow_pickle=False) as archive:
        assert sorted(archive.files) == sorted(data.KEYS)
        for split, n in (("train", 400), ("val", 100), ("test", 1000)):
            assert archive[f"{split}_images"].dtype == np.uint8
            assert archive[f"{split}_images"].shape == (n, 28, 28)
            assert archive[f"{split}_labels"].dtype == np.uint8
            assert archive[f"{split}_labels"].shape == (n, 1)
    data.read_npz(tiny_npz)  # passes every format check


def test_images_use_the_grey_range_and_classes_are_interleaved(tiny_npz: Path) -> None:
    arrays = data.read_npz(tiny_npz)
    images, labels = arrays["train_images"], arrays["train_labels"][:, 0]
    assert images.min() == 0 and images.max() > 200
    # Shuffled, as MedMNIST's splits are: not one block per class.
    assert np.count_nonzero(np.diff(labels)) > len(labels) // 4


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    first = synthetic.synthesize(tmp_path / "a.npz", seed=3, **SMALL).read_bytes()
    second = synthetic.synthesize(tmp_path / "b.npz", seed=3, **SMALL).read_bytes()
    other = synthetic.synthesize(tmp_path / "c.npz", seed=4, **SMALL).read_bytes()
    assert first == second
    assert first != other


def test_synthetic_files_are_identified_as_synthetic(tiny_splits) -> None:
    assert tiny_splits.identity.name == "synthetic"


def test_given_sizes_keep_octmnist_proportions(tmp_path: Path) -> None:
    path = synthetic.synthesize(tmp_path / "s.npz", n_train=1000, n_val=7, n_test=10)
    arrays = data.read_npz(path)
    counts = {split: np.bincount(arrays[f"{split}_labels"][:, 0], minlength=4)
              for split in data.SPLITS}
    # 1000 * OCTMNIST's shares = 343.5 / 104.8 / 79.5 / 472.2: the two largest remainders round up.
    assert counts["train"].tolist() == [343, 105, 80, 472]
    assert counts["val"].tolist() == [2, 1, 1, 3]  # 2.40 / 0.73 / 0.56 / 3.30
    assert counts["test"].tolist() == [3, 3, 2, 2]  # equal classes; ties go to lower labels


def test_default_sizes_are_octmnists() -> None:
    samples = data_source.octmnist_info()["n_samples"]
    for split in data.SPLITS:
        assert sum(synthetic.split_counts(split, None)) == samples[split]
    assert synthetic.split_counts("test", None) == (250, 250, 250, 250)


@pytest.mark.parametrize("n", [0, 1, 3, 10, 99, 529, 10_832])
def test_largest_remainder_sums_exactly_and_stays_within_one(n: int) -> None:
    weights = np.array(synthetic.OCTMNIST_COUNTS["train"], dtype=float)
    counts = np.array(synthetic.largest_remainder(n, weights))
    quotas = n * weights / weights.sum()
    assert counts.sum() == n
    assert np.all(np.abs(counts - quotas) < 1)


def test_missing_parent_dir_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        synthetic.synthesize(tmp_path / "nope" / "s.npz", **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    out = tmp_path / "s.npz"
    out.write_bytes(b"old")
    synthetic.synthesize(out, **SMALL)
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]
    with zipfile.ZipFile(out) as archive:
        assert archive.testzip() is None
