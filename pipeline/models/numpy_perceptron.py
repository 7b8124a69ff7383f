"""The homework's multi-class perceptron (question 1.1), from scratch in numpy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.models.spec import numpy_spec

if TYPE_CHECKING:
    from pipeline.config import TrialConfig
    from pipeline.data import Splits
    from pipeline.models.learner import Learner


def build(config: TrialConfig, data: Splits) -> Learner:
    """The perceptron bound to `data`, from zero weights, in `config.dtype`."""
    import numpy as np

    from pipeline.models.engines.numpy_models import Perceptron

    return Perceptron(data, config.learning_rate, config.seed, np.dtype(config.dtype))


# No hidden layer, no mini-batches: batch_size and hidden_size mean nothing to it.
SPEC = numpy_spec("numpy_perceptron", build, uses=frozenset(),
                  description="multi-class perceptron (numpy, per-sample updates)")
