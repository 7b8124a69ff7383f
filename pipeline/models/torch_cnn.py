"""A small CNN for the 28x28 images (beyond the homework): two 3x3 convolutions with max-pooling,
then one dense layer to the 4 classes.

    (1, 28, 28) -conv 3x3, 16-> (16, 26, 26) -pool 2-> (16, 13, 13)
                -conv 3x3, 32-> (32, 11, 11) -pool 2-> (32, 5, 5) -flatten, dropout-> 800 -> 4

It trains with autograd (the fused fast loop knows Linear stacks only). `activation` is used
after each convolution, `dropout` before the dense layer; there is no hidden dense layer, so
`hidden_size` and `layers` are refused. The references are MedMNIST v2's published OCTMNIST
results at 28x28, on the official 1,000-image test split (`--test-split full`): set beside
this model's runs in the report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.models.spec import Reference, torch_spec

if TYPE_CHECKING:
    from pipeline.config import TrialConfig

MEDMNIST = ("MedMNIST v2 (Yang et al., Scientific Data 2023), OCTMNIST at 28x28, official "
            "test split of 1,000 images")


def module(config: TrialConfig) -> Any:
    """The CNN; it reads the flat 784-pixel rows the data loader gives as 1 x 28 x 28 images."""
    from torch import nn

    from pipeline.data import IMAGE_SHAPE, N_CLASSES

    act = {"relu": nn.ReLU, "tanh": nn.Tanh}[config.activation]
    side = ((IMAGE_SHAPE[0] - 2) // 2 - 2) // 2  # after two (3x3 conv, 2x2 pool): 5
    return nn.Sequential(
        nn.Unflatten(1, (1, *IMAGE_SHAPE)),
        nn.Conv2d(1, 16, 3), act(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3), act(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(config.dropout),
        nn.Linear(32 * side * side, N_CLASSES))


SPEC = torch_spec(
    "torch_cnn", module,
    uses=frozenset({"batch_size", "activation", "dropout", "l2_decay", "optimizer"}),
    fixed={"hidden_size": 200, "layers": 1},
    description="small CNN: 2 conv layers + 1 dense layer (PyTorch, autograd)",
    references=(Reference("ResNet-18 (28)", "test/acc", 0.743, MEDMNIST),
                Reference("ResNet-50 (28)", "test/acc", 0.762, MEDMNIST),
                Reference("auto-sklearn", "test/acc", 0.601, MEDMNIST)))
