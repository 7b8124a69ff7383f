"""Shared fixtures: a tiny synthetic OCTMNIST-format file and its preprocessed splits."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.data import Splits, load_splits
from pipeline.synthetic import synthesize

# Big enough for the homework's 529-image test subset (182/55/42/250 of classes 0-3).
TINY_SIZES = {"n_train": 400, "n_val": 100, "n_test": 1000}


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic file in MedMNIST's npz format (train 400, val 100, test 1000)."""
    return synthesize(tmp_path_factory.mktemp("data") / "tiny.npz", seed=0, **TINY_SIZES)


@pytest.fixture(scope="session")
def tiny_splits(tiny_npz: Path) -> Splits:
    """`load_splits(tiny_npz)`: the homework's preprocessing and 529-image test subset."""
    return load_splits(tiny_npz)
