"""Shared fixtures: a tiny synthetic OCTMNIST-format file and its preprocessed splits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.data import Splits, load_splits
from pipeline.synthetic import synthesize

# The checkout under test first on the path of every process a test starts (`python -m
# pipeline` in a temporary directory, Ray's workers): else an installed medgrid (e.g. the
# editable install of another checkout) would answer for it.
ROOT = Path(__file__).resolve().parents[1]
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT),
                                                         os.environ.get("PYTHONPATH")]))

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
