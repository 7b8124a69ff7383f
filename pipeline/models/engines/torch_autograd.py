"""The standard epoch loop for any torch module: model.train(), forward, mean cross-entropy,
loss.backward(), an optimiser step over model.parameters(). Every parameter and buffer the
module has trains as torch defines it (BatchNorm's running statistics included), which the fused
fast loop (`torch_loop`) cannot promise for layers it does not know.

It keeps the homework's semantics of the fast loop: a fresh seeded permutation per epoch, every
sample once, the last partial batch kept; SGD without momentum or Adam, `l2_decay` as the
optimiser's weight_decay (on every parameter, biases too); dropout as nn.Dropout applies it.
The learner's one generator drives the order and, through one seed drawn per epoch, the
module's own randomness (dropout masks), so a trial is reproducible and its checkpointed
generator state is all a resumed epoch needs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.models.engines.torch_loop import AdamUpdate, Sgd
from pipeline.models.learner import EpochLoss

_SEED_RANGE = 2**62  # torch.manual_seed takes any 64-bit value; stay well inside


class AutogradLoop:
    """Epochs over preloaded tensors with autograd and `torch.optim`.

    State carried between epochs (what a checkpoint holds): the module's parameters and
    buffers, Adam's state (`update`, None for SGD, which has none) and `generator`.
    """

    def __init__(self, model: nn.Module, update: AdamUpdate | None, sgd: Sgd | None,
                 x: Tensor, y: Tensor, batch_size: int, generator: torch.Generator) -> None:
        if (update is None) == (sgd is None):
            raise ValueError("AutogradLoop: expected exactly one of an Adam update or SGD")
        self.model, self.update = model, update
        self.optimizer_step: Callable[[], object] = update if update is not None else \
            torch.optim.SGD(model.parameters(), lr=sgd.lr, weight_decay=sgd.weight_decay).step
        self.x, self.y = x, y
        self.size = min(batch_size, x.shape[0])
        self.generator = generator

    def run_epoch(self) -> EpochLoss:
        """One pass over the training set in train mode; syncs with the device at the end."""
        n, device = self.x.shape[0], self.x.device
        order = torch.randperm(n, generator=self.generator, device=device)
        seed = int(torch.randint(_SEED_RANGE, (1,), generator=self.generator, device=device))
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.model.train()
        # The module's own random draws (nn.Dropout uses torch's global generators) come from
        # a seed of the learner's generator, inside fork_rng so the global state is left as
        # it was: nothing outside the trial's config decides them.
        forked = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=forked):
            torch.manual_seed(seed)
            for start in range(0, n, self.size):
                index = order[start:start + self.size]
                loss_sum += self._step(self.x.index_select(0, index),
                                       self.y.index_select(0, index))
        total = loss_sum.item()  # the one host sync; NaN/inf passes through to fit()
        n_batches = -(-n // self.size)
        return EpochLoss(mean=total / n_batches, total=total)

    def _step(self, x: Tensor, y: Tensor) -> Tensor:
        """One optimiser step on the batch; returns its mean loss (detached)."""
        for p in self.model.parameters():
            p.grad = None
        loss = F.cross_entropy(self.model(x), y)
        loss.backward()
        self.optimizer_step()
        return loss.detach()
