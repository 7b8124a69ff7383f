"""OCTMNIST on disk: locate, fetch (+MD5), load and check MedMNIST's npz, and preprocess it the
homework's way (flatten to 784 features, divide by 256) into train/val/test splits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_CLASSES = 4
N_FEATURES = 28 * 28


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
