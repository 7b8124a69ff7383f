"""The homework's logistic regression in PyTorch (question 2.1): one Linear layer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.models.spec import torch_spec

if TYPE_CHECKING:
    from pipeline.config import TrialConfig


def module(config: TrialConfig) -> Any:
    """One Linear layer, 784 -> 4 (softmax cross-entropy lives in the loss)."""
    from pipeline.data import N_CLASSES, N_FEATURES
    from pipeline.models.engines.torch_models import LogisticRegression

    return LogisticRegression(N_CLASSES, N_FEATURES)


# No hidden layer: the FFN's options are refused rather than silently ignored.
SPEC = torch_spec("torch_logreg", module,
                  uses=frozenset({"batch_size", "l2_decay", "optimizer"}),
                  fixed={"layers": 1, "hidden_size": 200, "activation": "relu", "dropout": 0.0},
                  description="logistic regression (PyTorch, mini-batch)")
