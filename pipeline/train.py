"""The epoch loop shared by every model: train one pass, evaluate, yield the epoch's metrics.

Models plug in through the `Learner` protocol (`pipeline.models.learner`); the loop knows nothing
about numpy or torch. Metric names follow the project convention (`train/loss`, `val/acc`, ...).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from pipeline.models.learner import Learner


@dataclass
class EpochRecord:
    """Metrics of one epoch (step = epoch, counted from 1)."""

    epoch: int
    metrics: dict[str, float] = field(default_factory=dict)
    diverged: bool = False


def fit(learner: Learner, epochs: int, start_epoch: int = 1) -> Iterator[EpochRecord]:
    """Train epochs `start_epoch` .. `epochs` (the run's last epoch, e.g. `config.epochs`),
    yielding each epoch's metrics; a learner restored after k epochs resumes with
    `start_epoch=k + 1`, so its records are numbered as in an uninterrupted run.

    Stops early, after yielding a record flagged `diverged`, as soon as the training loss is
    NaN or infinite: a diverged run keeps the metrics it had and never crashes or hangs.
    """
    for epoch in range(start_epoch, epochs + 1):
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
