"""One trial as a function of its config: seed, build the learner, fit, test, return metrics.

Knows nothing of Ray or MLflow: the caller passes `on_epoch` to observe progress (Tune reports,
MLflow logging), so the same function runs in tests without either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pipeline.config import TrialConfig
from pipeline.data import N_CLASSES, Splits
from pipeline.models import build_learner
from pipeline.train import EpochRecord, fit

EpochCallback = Callable[[EpochRecord], None]


@dataclass
class TrialResult:
    """What a finished (or diverged) trial produced."""

    config: TrialConfig
    history: list[EpochRecord] = field(default_factory=list)
    diverged: bool = False
    test_acc: float = float("nan")
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((N_CLASSES, N_CLASSES), int))
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def final_metrics(self) -> dict[str, float]:
        """The last epoch's metrics plus `test/acc`."""
        last = self.history[-1].metrics if self.history else {}
        return {**last, "test/acc": self.test_acc}


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = N_CLASSES
                     ) -> np.ndarray:
    """Counts[true, predicted]."""
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes**2).reshape(
        n_classes, n_classes
    )


def run_trial(config: TrialConfig, data: Splits, on_epoch: EpochCallback | None = None
              ) -> TrialResult:
    """Train `config.model` on `data` for `config.epochs` epochs and test it once at the end."""
    learner = build_learner(config, data)
    result = TrialResult(config)
    for record in fit(learner, config.epochs):
        result.history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        result.diverged = record.diverged
    test = learner.evaluate("test")
    result.test_acc = test.acc
    result.confusion = confusion_matrix(data.y_test, test.predictions)
    result.weights = learner.state_dict()
    return result
