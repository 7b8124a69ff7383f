"""The epoch loop shared by every model: train one pass, evaluate, yield the epoch's metrics.

Model families plug in through the `Learner` protocol; the loop knows nothing about numpy or
torch. Metric names follow the project convention (`train/loss`, `val/acc`, ...).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

Split = Literal["train", "val", "test"]


@dataclass(frozen=True)
class Evaluation:
    """Loss, accuracy and predicted labels of a model on one split."""

    loss: float
    acc: float
    predictions: np.ndarray


@dataclass(frozen=True)
class EpochLoss:
    """Training loss of one epoch: `mean` is what `train/loss` reports; `total` is the sum over
    samples (numpy models) or batches (torch), the figure the homework quotes for its MLP."""

    mean: float
    total: float


class Learner(Protocol):
    """A model bound to its data and optimiser, seeded at construction."""

    def train_epoch(self) -> EpochLoss:
        """One pass over the training set in a fresh seeded order."""
        ...

    def evaluate(self, split: Split) -> Evaluation:
        """Whole-split evaluation without updating anything."""
        ...

    def state_dict(self) -> dict[str, np.ndarray]:
        """The trained parameters, as numpy arrays (for the weights artifact)."""
        ...


@dataclass
class EpochRecord:
    """Metrics of one epoch (step = epoch, counted from 1)."""

    epoch: int
    metrics: dict[str, float] = field(default_factory=dict)
    diverged: bool = False


def fit(learner: Learner, epochs: int) -> Iterator[EpochRecord]:
    """Train for `epochs` epochs, yielding each epoch's metrics.

    Stops early, after yielding a record flagged `diverged`, as soon as the training loss is
    NaN or infinite: a diverged run keeps the metrics it had and never crashes or hangs.
    """
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        loss = learner.train_epoch()
        elapsed = time.perf_counter() - start
        metrics = {"train/loss": loss.mean, "train/loss_sum": loss.total, "epoch_time_s": elapsed}
        if not (math.isfinite(loss.mean) and math.isfinite(loss.total)):
            yield EpochRecord(epoch, metrics, diverged=True)
            return
        for split in ("train", "val"):
            evaluation = learner.evaluate(split)
            metrics[f"{split}/acc"] = evaluation.acc
            if split == "val":
                metrics["val/loss"] = evaluation.loss
        yield EpochRecord(epoch, metrics)
