"""The homework's multinomial logistic regression (question 1.2), from scratch in numpy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.models.spec import numpy_spec

if TYPE_CHECKING:
    from pipeline.config import TrialConfig
    from pipeline.data import Splits
    from pipeline.models.learner import Learner


def build(config: TrialConfig, data: Splits) -> Learner:
    """Logistic regression bound to `data`, from zero weights, in `config.dtype`."""
    import numpy as np

    from pipeline.models.engines.numpy_models import LogisticRegression

    return LogisticRegression(data, config.learning_rate, config.seed, np.dtype(config.dtype))


# No hidden layer, no mini-batches: batch_size and hidden_size mean nothing to it.
SPEC = numpy_spec("numpy_logreg", build, uses=frozenset(),
                  description="multinomial logistic regression (numpy, per-sample SGD)")
