"""The homework's feed-forward network in PyTorch (question 2.2):
(Linear -> activation -> Dropout) x layers, then an output Linear."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.models.spec import torch_spec

if TYPE_CHECKING:
    from pipeline.config import TrialConfig


def module(config: TrialConfig) -> Any:
    """The MLP of `config.layers` hidden layers of `config.hidden_size` units."""
    from pipeline.data import N_CLASSES, N_FEATURES
    from pipeline.models.engines.torch_models import FeedforwardNetwork

    return FeedforwardNetwork(N_CLASSES, N_FEATURES, config.hidden_size, config.layers,
                              config.activation, config.dropout)


SPEC = torch_spec("torch_ffn", module, description="feed-forward network (PyTorch, mini-batch)")
