"""Models by name: each name maps to a factory that binds a model to its data and config.

Factories import their framework lazily, so numpy-only trials never pay for importing torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.config import TrialConfig
    from pipeline.data import Splits
    from pipeline.models.learner import Learner

LearnerFactory = Callable[["TrialConfig", "Splits"], "Learner"]


def _numpy(name: str) -> LearnerFactory:
    def factory(config: TrialConfig, data: Splits) -> Learner:
        from pipeline.models import numpy_models

        return numpy_models.build(name, config, data)

    return factory


def _torch(name: str) -> LearnerFactory:
    def factory(config: TrialConfig, data: Splits) -> Learner:
        from pipeline.models import torch_models

        return torch_models.build(name, config, data)

    return factory


REGISTRY: dict[str, LearnerFactory] = {
    "numpy_perceptron": _numpy("numpy_perceptron"),
    "numpy_logreg": _numpy("numpy_logreg"),
    "numpy_mlp": _numpy("numpy_mlp"),
    "torch_logreg": _torch("torch_logreg"),
    "torch_ffn": _torch("torch_ffn"),
}
MODEL_NAMES: tuple[str, ...] = tuple(REGISTRY)


def build_learner(config: TrialConfig, data: Splits) -> Learner:
    """The learner for `config.model`, bound to `data` and seeded with `config.seed`."""
    return REGISTRY[config.model](config, data)
