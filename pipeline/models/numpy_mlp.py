"""The homework's one-hidden-layer ReLU MLP (question 1.2.2), from scratch in numpy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.models.spec import numpy_spec

if TYPE_CHECKING:
    from pipeline.config import TrialConfig
    from pipeline.data import Splits
    from pipeline.models.learner import Learner


def build(config: TrialConfig, data: Splits) -> Learner:
    """The MLP bound to `data`, with the homework's seeded init, in `config.dtype`."""
    import numpy as np

    from pipeline.models.engines.numpy_models import MLP

    return MLP(data, config.learning_rate, config.seed, config.hidden_size,
               np.dtype(config.dtype))


# One ReLU hidden layer of `hidden_size` (activation is fixed at relu, and meaningful); trained
# one sample at a time, so batch_size means nothing to it.
SPEC = numpy_spec("numpy_mlp", build, uses=frozenset({"hidden_size", "activation"}),
                  description="one-hidden-layer ReLU MLP (numpy, per-sample SGD)")
