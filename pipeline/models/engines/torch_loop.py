"""The fast epoch loop of the torch models: preloaded tensors, hand-written backprop, one host
sync per epoch, and on CUDA the full-batch step replayed as a CUDA graph.

It trains one kind of module only, a plain stack: Linear -> activation [-> Dropout] -> ... ->
Linear, one activation (ReLU or Tanh) and one dropout rate throughout. `plain_stack` recognises
one, or raises `NotAPlainStack` naming what it does not know: a module it does not understand
(BatchNorm, a convolution, a custom forward) would otherwise train half (only its Linear layers),
silently. Any other module trains with autograd (`torch_autograd`).

Why not autograd + DataLoader: at the homework's batch of 16 a step is ~10 MFLOP, so per-op
framework overhead (Dataset.__getitem__ per item, collation, autograd bookkeeping, optimiser
Python code, `loss.item()` per step) costs more than the arithmetic. The backward pass below is
the textbook one for Linear -> activation -> dropout stacks with softmax cross-entropy; the
tests check it (and the updates) against autograd + `torch.optim` on the same batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from pipeline.models.learner import EpochLoss


class NotAPlainStack(ValueError):
    """The fast loop was asked to train a module it does not fully understand."""


@dataclass(frozen=True)
class PlainStack:
    """What the fast loop needs to know of a module it recognised: its Linear layers (input to
    output), the activation between them and the dropout rate after each activation."""

    linears: list[nn.Linear]
    activation: Literal["relu", "tanh"]
    dropout: float


# The layers the hand-written backward pass implements; matched by exact type, since a
# subclass may change forward(). A container is only looked into if it is exactly
# nn.Sequential, or declares in `fast_path_body` the one child its forward() applies.
_ACTIVATIONS: dict[type[nn.Module], Literal["relu", "tanh"]] = {nn.ReLU: "relu", nn.Tanh: "tanh"}
_KNOWN = "Linear (with bias), ReLU, Tanh, Dropout, in nn.Sequential"


def plain_stack(model: nn.Module) -> PlainStack:
    """`model` as the fast loop sees it; `NotAPlainStack` (naming the layer and its place in
    the model) unless every layer is one the hand-written backward pass implements, in the
    order it implements them."""
    layers = _leaves(model, "")
    linears: list[nn.Linear] = []
    activations: set[str] = set()
    rates: list[float] = []
    expect = "Linear"
    for path, layer in layers:
        kind = type(layer)
        if kind is nn.Linear and expect in ("Linear", "Linear or Dropout"):
            if expect == "Linear or Dropout":
                rates.append(0.0)
            if layer.bias is None:
                raise NotAPlainStack(f"the fast loop cannot train a Linear without bias ({path})")
            linears.append(layer)
            expect = "activation"
        elif kind in _ACTIVATIONS and expect == "activation":
            activations.add(_ACTIVATIONS[kind])
            expect = "Linear or Dropout"
        elif kind is nn.Dropout and expect == "Linear or Dropout":
            rates.append(float(layer.p))
            expect = "Linear"
        elif kind is nn.Linear or kind in _ACTIVATIONS or kind is nn.Dropout:
            raise NotAPlainStack(f"the fast loop cannot train {kind.__name__} at {path}: "
                                 f"expected {expect} there (it runs Linear -> activation "
                                 "[-> Dropout] -> ... -> Linear)")
        else:
            raise NotAPlainStack(f"the fast loop cannot train {kind.__name__} ({path}): it "
                                 f"knows {_KNOWN} only; train this module with autograd")
    if expect != "activation":
        raise NotAPlainStack("the fast loop cannot train this module: it does not end with a "
                             "Linear layer (the logits)")
    if len(activations) > 1 or len(set(rates)) > 1:
        raise NotAPlainStack(f"the fast loop cannot train mixed layers: activations "
                             f"{sorted(activations)}, dropout rates {sorted(set(rates))}; it "
                             "uses one of each throughout")
    return PlainStack(linears, activations.pop() if activations else "relu",
                      rates[0] if rates else 0.0)


def _leaves(module: nn.Module, path: str) -> list[tuple[str, nn.Module]]:
    """The layers of `module` in forward order, with their torch paths (e.g. `net.1`; the
    whole model's is "the model"); containers unwrapped."""
    body = getattr(type(module), "fast_path_body", None)
    if type(module) is nn.Sequential:
        children = list(module.named_children())
    elif body is not None:
        children = list(module.named_children())
        own = list(module.named_parameters(recurse=False)) + list(
            module.named_buffers(recurse=False))
        if [name for name, _ in children] != [body] or own:
            raise NotAPlainStack(f"the fast loop cannot train {type(module).__name__} "
                                 f"({path or 'the model'}): it declares fast_path_body "
                                 f"{body!r} but holds more")
    else:
        if list(module.children()):
            raise NotAPlainStack(f"the fast loop cannot train {type(module).__name__} "
                                 f"({path or 'the model'}): a container with its own "
                                 f"forward(); it knows {_KNOWN} only; train this module with "
                                 "autograd")
        return [(path or "the model", module)]
    return [leaf for name, child in children
            for leaf in _leaves(child, f"{path}.{name}" if path else name)]


@dataclass(frozen=True)
class Sgd:
    """Plain SGD (no momentum) with L2 as weight decay, as `torch.optim.SGD` applies it."""

    lr: float
    weight_decay: float = 0.0


class Backprop:
    """Forward and backward of Linear layers (activation + dropout between them) without
    autograd. With `sgd`, each layer's update is applied as soon as its gradient is known
    (fused into the weight-gradient GEMM); without, gradients land in each parameter's `.grad`
    buffer, allocated once, for an optimiser to use."""

    def __init__(self, linears: list[nn.Linear], activation: str, dropout: float,
                 sgd: Sgd | None = None) -> None:
        self.relu = activation == "relu"
        self.dropout, self.sgd = dropout, sgd
        # Transposed views: the models store weights as contiguous (in, out) (see
        # `torch_models.relayout`), where x @ W^T is the fastest GEMM on CPU.
        self.wt = [lin.weight.detach().t() for lin in linears]
        self.b = [lin.bias.detach() for lin in linears]
        if sgd is None:
            for lin, wt in zip(linears, self.wt, strict=True):
                lin.weight.grad = torch.zeros_like(wt).t()
                lin.bias.grad = torch.zeros_like(lin.bias)
            self.gwt = [lin.weight.grad.t() for lin in linears]
            self.gb = [lin.bias.grad for lin in linears]

    @property
    def n_noise(self) -> int:
        """How many uniform-noise tensors (one per hidden layer) a step needs for dropout."""
        return len(self.wt) - 1 if self.dropout > 0 else 0

    def __call__(self, x: Tensor, y: Tensor, noise: list[Tensor]) -> Tensor:
        """Backpropagate the mean cross-entropy on (x, y[:, 0]); return that loss.

        `noise` (uniform in [0, 1), one per hidden layer) is overwritten by the dropout masks.
        """
        inputs, hidden, masks, logits = self._forward(x, noise)
        logp = torch.log_softmax(logits, 1)
        loss = logp.gather(1, y).sum().mul_(-1.0 / x.shape[0])
        # d(mean CE)/d(logits) = (softmax - onehot) / batch
        grad = logp.exp_().scatter_add_(1, y, torch.full_like(logp[:, :1], -1.0))
        grad.mul_(1.0 / x.shape[0])
        self._backward(grad, inputs, hidden, masks)
        return loss

    def _forward(self, x: Tensor, noise: list[Tensor]
                 ) -> tuple[list[Tensor], list[Tensor], list[Tensor | None], Tensor]:
        inputs, hidden, masks = [], [], []
        a = x
        for i in range(len(self.wt) - 1):
            inputs.append(a)
            z = torch.addmm(self.b[i], a, self.wt[i])
            h = torch.relu(z) if self.relu else torch.tanh(z)
            hidden.append(h)
            mask = None
            if self.dropout > 0:
                # nn.Dropout's rule: keep with probability 1 - p, scale kept units by 1/(1 - p).
                # The uniform noise becomes the mask in place: no allocation per step.
                mask = noise[i].ge_(self.dropout).mul_(1.0 / (1.0 - self.dropout))
                h = h * mask
            masks.append(mask)
            a = h
        inputs.append(a)
        return inputs, hidden, masks, torch.addmm(self.b[-1], a, self.wt[-1])

    def _backward(self, grad: Tensor, inputs: list[Tensor], hidden: list[Tensor],
                  masks: list[Tensor | None]) -> None:
        for i in reversed(range(len(self.wt))):
            # The gradient for the layer below uses this layer's weights before their update.
            below = torch.mm(grad, self.wt[i].t()) if i > 0 else None
            self._weight_gradient(i, inputs[i], grad)
            if below is None:
                break
            grad = below
            if masks[i - 1] is not None:
                grad.mul_(masks[i - 1])
            h = hidden[i - 1]
            if self.relu:
                grad.mul_(h > 0)
            else:
                grad.mul_(1.0 - h * h)

    def _weight_gradient(self, i: int, a: Tensor, grad: Tensor) -> None:
        """Layer i's gradient (a^T grad, column sums of grad): stored, or applied by SGD."""
        if self.sgd is None:
            torch.mm(a.t(), grad, out=self.gwt[i])
            torch.sum(grad, 0, out=self.gb[i])
            return
        # W - lr (g + wd W) = (1 - lr wd) W - lr g: one GEMM reads and writes W once, instead
        # of a gradient GEMM plus a separate pass over W (~15% of a batch-16 step on CPU).
        lr, keep = self.sgd.lr, 1.0 - self.sgd.lr * self.sgd.weight_decay
        self.wt[i].addmm_(a.t(), grad, beta=keep, alpha=-lr)
        if keep != 1.0:
            self.b[i].mul_(keep)
        self.b[i].add_(grad.sum(0), alpha=-lr)


class AdamUpdate:
    """`torch.optim.Adam` (capturable on CUDA, so that its step can live in a CUDA graph)."""

    def __init__(self, params: list[nn.Parameter], lr: float, weight_decay: float) -> None:
        on_cuda = params[0].device.type == "cuda"
        self.params = list(params)
        self.optimizer = torch.optim.Adam(self.params, lr=lr, weight_decay=weight_decay,
                                          foreach=True, capturable=on_cuda)

    @property
    def state_keys(self) -> tuple[str, ...]:
        """The names of Adam's per-parameter state tensors."""
        keys = ("step", "exp_avg", "exp_avg_sq")
        return (*keys, "max_exp_avg_sq") if self.optimizer.defaults["amsgrad"] else keys

    def get_state(self) -> list[dict[str, Tensor]] | None:
        """Adam's live state tensors per parameter (in `params` order), or None before the
        first step created them (the CUDA-graph capture creates them, then zeroes them)."""
        states = [self.optimizer.state.get(p) for p in self.params]
        if not all(states):
            return None
        return [{key: state[key] for key in self.state_keys} for state in states]

    def set_state(self, values: list[dict[str, Tensor]] | None) -> None:
        """Make Adam's state `values` (None: never stepped), in place wherever it exists, since
        a captured CUDA graph reads and writes those very tensors. Shapes and dtypes are the
        caller's to check (they are those of `get_state`)."""
        if values is None:
            self.reset()  # zero moments and steps behave exactly as Adam's lazy initial state
            return
        if self.get_state() is not None:
            for p, value in zip(self.params, values, strict=True):
                state = self.optimizer.state[p]
                for key in self.state_keys:
                    state[key].copy_(value[key])
            return
        # No state yet (eager learner, never stepped): create it through torch's own loading,
        # which puts `step` where this optimizer keeps it; moments get the parameter's layout.
        loaded = self.optimizer.state_dict()
        loaded["state"] = {
            i: {key: value[key] if key == "step" else
                torch.zeros_like(p, memory_format=torch.preserve_format).copy_(value[key])
                for key in self.state_keys}
            for i, (p, value) in enumerate(zip(self.params, values, strict=True))}
        self.optimizer.load_state_dict(loaded)

    def __call__(self) -> None:
        """Apply one update from the current gradients."""
        self.optimizer.step()

    def reset(self) -> None:
        """Back to Adam's initial state (moments and step count are all zeros), in place."""
        for state in self.optimizer.state.values():
            for value in state.values():
                if isinstance(value, Tensor):
                    value.zero_()


@dataclass
class Batch:
    """Preallocated batch buffers: inputs, labels as a column, dropout noise per layer."""

    x: Tensor
    y: Tensor
    noise: list[Tensor]

    @classmethod
    def empty(cls, size: int, x: Tensor, n_noise: int, width: int) -> Batch:
        """Buffers for `size` samples like `x`, with `n_noise` noise tensors of `width`."""
        return cls(x.new_empty(size, x.shape[1]), torch.empty(size, 1, dtype=torch.long,
                   device=x.device), [x.new_empty(size, width) for _ in range(n_noise)])

    def fill(self, x: Tensor, y: Tensor, index: Tensor, generator: torch.Generator) -> None:
        """Gather the samples `index` and draw fresh noise, writing only into the buffers."""
        torch.index_select(x, 0, index, out=self.x)
        torch.index_select(y, 0, index, out=self.y)
        for noise in self.noise:
            noise.uniform_(generator=generator)


class EpochLoop:
    """Epochs over preloaded tensors: a seeded permutation per epoch, every sample once, the
    last partial batch kept (as DataLoader(shuffle=True) does), loss summed on the device.

    State carried from one epoch to the next (what a checkpoint must hold): the parameters,
    the optimiser's state (`update`, Adam only) and `generator`. Everything else is rewritten
    before it is read: the batch buffers and noise by `Batch.fill`, the gradient buffers by each
    backward pass, `loss_sum` at the start of each epoch; the CUDA graph only holds addresses
    (parameters, Adam state, batch buffers), so restoring those in place keeps it valid.
    """

    def __init__(self, backprop: Backprop, update: AdamUpdate | None, x: Tensor,
                 y: Tensor, batch_size: int, generator: torch.Generator,
                 cuda_graph: bool = False) -> None:
        self.backprop = backprop
        self.update = update  # None: SGD, which `backprop` applies itself
        self.x, self.y = x, y.view(-1, 1)  # labels as a column: what gather/scatter want
        self.generator = generator
        width = backprop.wt[0].shape[1]
        n, size = x.shape[0], min(batch_size, x.shape[0])
        self.full = Batch.empty(size, x, backprop.n_noise, width)
        self.last = Batch.empty(n % size, x, backprop.n_noise, width) if n % size else None
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
        self.graph = self._capture() if cuda_graph else None

    def run_epoch(self) -> EpochLoss:
        """One pass over the training set; syncs with the device once, at the end."""
        n, size = self.x.shape[0], self.full.x.shape[0]
        order = torch.randperm(n, generator=self.generator, device=self.x.device)
        self.loss_sum.zero_()
        n_full = n // size
        for start in range(0, n_full * size, size):
            self.full.fill(self.x, self.y, order[start:start + size], self.generator)
            if self.graph is not None:
                self.graph.replay()
            else:
                self._step(self.full)
        if self.last is not None:  # the partial batch runs eagerly: its shapes differ
            self.last.fill(self.x, self.y, order[n_full * size:], self.generator)
            self._step(self.last)
        total = self.loss_sum.item()  # the one host sync; NaN/inf passes through to fit()
        n_batches = n_full + (self.last is not None)
        return EpochLoss(mean=total / n_batches, total=total)

    def _step(self, batch: Batch) -> None:
        self.loss_sum.add_(self.backprop(batch.x, batch.y, batch.noise))
        if self.update is not None:
            self.update()

    def _capture(self) -> torch.cuda.CUDAGraph:
        """Record the full-batch step as a CUDA graph, leaving the model as it was.

        Checked on an H200 by tests/test_gpu.py (graph replay == eager step); on CPU the tests
        fake the CUDA calls to check this bookkeeping. Follows the whole-network capture recipe of
        the `torch.cuda.graphs` docs: warm-up steps on a side stream (cuBLAS handles,
        Adam's lazily created state), capture, then parameters and optimiser state restored
        in place, so the graph's static addresses stay valid and training starts
        from the seeded initial weights.
        """
        trained = [*self.backprop.wt, *self.backprop.b]
        saved = [t.clone() for t in trained]
        self.full.x.zero_()
        self.full.y.zero_()
        for noise in self.full.noise:
            noise.fill_(1.0)  # keep every unit; draws nothing from the trial's generator
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self._step(self.full)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._step(self.full)
        for tensor, value in zip(trained, saved, strict=True):
            tensor.copy_(value)
        if self.update is not None:
            self.update.reset()
        return graph
