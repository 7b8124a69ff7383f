"""The torch learner: any torch model's nn.Module (built by its spec), bound to its data,
optimiser and seed as a `Learner`; and the homework's two modules (question 2), logistic
regression and the feed-forward network.

Training takes one of two paths (`build(..., path=)`):
- "autograd" (`torch_autograd`): the standard loop, right for any module;
- "fast" (`torch_loop`): hand-written backprop over preloaded tensors (a CUDA graph on GPU),
  for plain Linear/activation/Dropout stacks only; asked for with any other module, it refuses
  (`torch_loop.NotAPlainStack`, naming the layer) rather than train part of it.
"auto" (the default) takes the fast path when `torch_loop.plain_stack` recognises the whole
module (the homework's logreg and FFN), else autograd. Evaluation runs the module itself, in
eval mode.

Training state (`get_state` / `set_state`, for per-epoch checkpoints): the parameters by their
torch names (`param/net.0.weight`, shape (out, in)), the buffers (`buffer/<name>`, e.g.
BatchNorm's running statistics; the homework's modules have none), Adam's step counts and
moments (`adam/<param>/<key>`; SGD has none), the state of the learner's one `torch.Generator`
(`rng`: epoch order and dropout noise) and the generator's device type (`rng_device`), `kind` and
`epochs_done`. All arrays are copied to the host (`.cpu()`), so the code is the same on any device.

What holds: on CPU (tested) a restored learner continues bitwise as the saved one would have.
On CUDA the same is expected for a learner restored on the same kind of device, in the same
graph mode (CUDA graph or eager), with the same torch build: the generator's (Philox) state,
parameters and Adam state (capturable: `step` on the device) are written into the captured
tensors in place; the kernels in the step (GEMMs, index_select, one-index-per-row scatter_add,
reductions) are deterministic run to run. Across devices nothing is guaranteed, and a state
from another device type is refused (the CPU and CUDA generator states are incompatible).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.config import TrialConfig
from pipeline.data import Splits
from pipeline.errors import UserError
from pipeline.models.engines.torch_autograd import AutogradLoop
from pipeline.models.engines.torch_loop import (
    AdamUpdate,
    Backprop,
    EpochLoop,
    NotAPlainStack,
    PlainStack,
    Sgd,
    plain_stack,
)
from pipeline.models.learner import EpochLoss, Evaluation, Split, check_kind, check_state

EVAL_BATCH = 8192
# CPU trials run single-threaded. At batch 16 the GEMMs are too small to split, and a sweep
# runs one trial per core: extra OpenMP threads then only fight over cores (measured here:
# 2 threads beside one busy core made an epoch 5-15x slower). Scoped to each call, restored after.
CPU_THREADS = 1


class LogisticRegression(nn.Module):
    """One linear layer; softmax cross-entropy lives in the loss."""

    fast_path_body = "linear"  # forward() is self.linear(x): the fast loop may train it

    def __init__(self, n_classes: int, n_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits, shape (batch, n_classes)."""
        return self.linear(x)


class FeedforwardNetwork(nn.Module):
    """The homework's MLP: (Linear -> activation -> Dropout) x layers, then an output Linear."""

    fast_path_body = "net"  # forward() is self.net(x): the fast loop may train it

    def __init__(self, n_classes: int, n_features: int, hidden_size: int, layers: int,
                 activation: str, dropout: float) -> None:
        super().__init__()
        act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
        blocks: list[nn.Module] = []
        for i in range(layers):
            width_in = n_features if i == 0 else hidden_size
            blocks += [nn.Linear(width_in, hidden_size), act(), nn.Dropout(dropout)]
        self.net = nn.Sequential(*blocks, nn.Linear(hidden_size, n_classes))
        self.activation, self.dropout = activation, dropout

    def forward(self, x: Tensor) -> Tensor:
        """Logits, shape (batch, n_classes)."""
        return self.net(x)


TrainPath = Literal["auto", "fast", "autograd"]


def build(name: str, config: TrialConfig, data: Splits, device: str | None = None,
          cuda_graph: bool = True, path: TrainPath = "auto") -> TorchLearner:
    """The torch learner `name`, bound to `data`, seeded with `config.seed`.

    `device` defaults to CUDA when available, else CPU; `cuda_graph=False` keeps CUDA eager
    (the graph is the fast path's). `path`: see the module docstring.
    """
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
        torch.random.default_generator.manual_seed(config.seed)
        model = _model(name, config)
    model.to(dev)
    relayout(model)
    return TorchLearner(model, config, data, dev, cuda_graph and dev.type == "cuda", path)


def _model(name: str, config: TrialConfig) -> nn.Module:
    """The nn.Module of torch model `name`, as its spec builds it."""
    from pipeline.models import get_spec

    spec = get_spec(name)
    if spec.module is None:
        raise UserError(f"model = {name!r} is a {spec.family} model, not a torch one")
    return spec.module(config)


def relayout(model: nn.Module) -> None:
    """Store each Linear weight as a contiguous (in, out) matrix seen through a transpose.

    Same values, shape and state_dict; only the memory order changes, because on CPU
    x @ W^T runs ~1.5x faster at batch 16 when W^T is the contiguous one.
    """
    for layer in model.modules():
        if isinstance(layer, nn.Linear):
            layer.weight = nn.Parameter(layer.weight.detach().t().contiguous().t())


def linears(model: nn.Module) -> list[nn.Linear]:
    """The model's Linear layers, input to output."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def _fast_stack(model: nn.Module, path: TrainPath) -> PlainStack | None:
    """The stack the fast loop trains, or None for autograd: "auto" takes the fast path only
    for a module it recognises whole; "fast" with any other raises `NotAPlainStack` (naming
    the layer it does not know)."""
    if path == "autograd":
        return None
    try:
        return plain_stack(model)
    except NotAPlainStack:
        if path == "fast":
            raise
        return None


class TorchLearner:
    """A torch model with its optimiser, its data on its device and its seeded generator."""

    def __init__(self, model: nn.Module, config: TrialConfig, data: Splits,
                 device: torch.device, cuda_graph: bool, path: TrainPath = "auto") -> None:
        self.model, self.device = model, device
        self.kind, self.epochs_done = config.model, 0
        self.splits = {split: (_tensor(getattr(data, f"x_{split}"), np.float32, device),
                               _tensor(getattr(data, f"y_{split}"), np.int64, device))
                       for split in ("train", "val", "test")}
        sgd = Sgd(config.learning_rate, config.l2_decay) if config.optimizer == "sgd" else None
        # One generator drives both the epoch order and the dropout noise, on the data's device.
        generator = torch.Generator(device=device).manual_seed(config.seed)
        self.threads = CPU_THREADS if device.type == "cpu" else None
        x, y = self.splits["train"]
        update = None if sgd else AdamUpdate(list(model.parameters()), config.learning_rate,
                                             config.l2_decay)
        stack = _fast_stack(model, path)
        self.path: Literal["fast", "autograd"] = "autograd" if stack is None else "fast"
        self.loop: EpochLoop | AutogradLoop
        if stack is None:
            self.loop = AutogradLoop(model, update, sgd, x, y, config.batch_size, generator)
        else:  # Backprop applies SGD itself; Adam steps over the gradients it leaves
            backprop = Backprop(stack.linears, stack.activation, stack.dropout, sgd)
            self.loop = EpochLoop(backprop, update, x, y, config.batch_size, generator,
                                  cuda_graph)

    def train_epoch(self) -> EpochLoss:
        """One pass over the training set in a fresh seeded order."""
        with _threads(self.threads):
            loss = self.loop.run_epoch()
        self.epochs_done += 1
        return loss

    def evaluate(self, split: Split) -> Evaluation:
        """Mean cross-entropy, accuracy and predictions on `split`, in eval mode (no dropout)."""
        x, y = self.splits[split]
        if len(y) == 0:
            return Evaluation(float("nan"), float("nan"), np.zeros(0, dtype=np.int64))
        self.model.eval()
        try:
            with torch.inference_mode(), _threads(self.threads):
                loss_sum, predicted = self._predict(x, y)
        finally:
            self.model.train()
        n = len(y)
        correct = (predicted == y).sum().item()
        return Evaluation(loss_sum.item() / n, correct / n, predicted.cpu().numpy())

    def _predict(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Summed cross-entropy and argmax predictions, in large batches."""
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        predictions = []
        for start in range(0, len(y), EVAL_BATCH):
            logits = self.model(x[start:start + EVAL_BATCH])
            loss_sum += F.cross_entropy(logits, y[start:start + EVAL_BATCH], reduction="sum")
            predictions.append(logits.argmax(1))
        return loss_sum, torch.cat(predictions)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters by their torch names (e.g. `net.0.weight`, shape (out, in))."""
        return {name: np.ascontiguousarray(value.detach().cpu().numpy())
                for name, value in self.model.state_dict().items()}

    def get_state(self) -> dict[str, np.ndarray]:
        """Host copies of the parameters, Adam's state, the generator's state, `kind` and
        `epochs_done` (see the module docstring); each array is copied once."""
        state = {"kind": np.array(self.kind), "epochs_done": np.array(self.epochs_done, np.int64),
                 "rng": self.loop.generator.get_state().numpy(),  # get_state returns a copy
                 "rng_device": np.array(self.loop.generator.device.type)}
        for name, param in self.model.named_parameters():
            state[f"param/{name}"] = _host_copy(param)
        for name, buffer in self.model.named_buffers():
            state[f"buffer/{name}"] = _host_copy(buffer)
        adam = self.loop.update.get_state() if self.loop.update is not None else None
        if adam is not None:  # in the optimiser's order: that of model.parameters()
            names = [name for name, _ in self.model.named_parameters()]
            for name, values in zip(names, adam, strict=True):
                state.update({f"adam/{name}/{key}": _host_copy(value)
                              for key, value in values.items()})
        return state

    def set_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore a `get_state` of this model (same architecture, optimiser and device type)
        in place: `torch_loop.Backprop` holds transposed views of the weights, the optimisers
        hold the parameters themselves, and a CUDA graph
        holds the addresses of the parameters and Adam's state, so nothing is rebound.
        `UserError` (and nothing changed) for any other state."""
        check_kind(state, self.kind)
        device = self.loop.generator.device.type
        saved_device = state.get("rng_device")
        if isinstance(saved_device, np.ndarray) and saved_device.ndim == 0 and \
                str(saved_device[()]) != device:
            raise UserError(f"learner state is from a {saved_device[()]} generator; this "
                            f"learner runs on {device} (a state resumes on its own device type)")
        params = dict(self.model.named_parameters())
        buffers = dict(self.model.named_buffers())
        spec: dict[str, tuple[tuple[int, ...], object]] = {
            "rng": (tuple(self.loop.generator.get_state().shape), np.uint8),
            "rng_device": ((), str),
            **{f"param/{name}": (tuple(p.shape), _numpy_dtype(p)) for name, p in params.items()},
            **{f"buffer/{name}": (tuple(b.shape), np.dtype(_numpy_dtype(b)))
               for name, b in buffers.items()}}
        update = self.loop.update
        with_adam = any(key.startswith("adam/") for key in state)
        if update is not None and (with_adam or _claimed_epochs(state) > 0):
            # Adam's state is required once it has stepped; before, it may be absent.
            live = update.get_state()
            for i, (name, p) in enumerate(params.items()):
                for key in update.state_keys:
                    spec[f"adam/{name}/{key}"] = (
                        (tuple(live[i][key].shape), _numpy_dtype(live[i][key])) if live else
                        ((), None) if key == "step" else (tuple(p.shape), _numpy_dtype(p)))
        epochs_done = check_state(state, self.kind, spec)
        try:  # first: the one step that can still refuse the state
            self.loop.generator.set_state(torch.tensor(state["rng"]))
        except RuntimeError as error:
            raise UserError(f"learner state 'rng': not a valid {device} generator state "
                            f"({error})") from None
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(torch.tensor(state[f"param/{name}"]))
            for name, b in buffers.items():
                b.copy_(torch.tensor(state[f"buffer/{name}"]))
        if update is not None:
            update.set_state([
                {key: torch.tensor(state[f"adam/{name}/{key}"]) for key in update.state_keys}
                for name in params] if with_adam else None)
        self.epochs_done = epochs_done


def _claimed_epochs(state: Mapping[str, np.ndarray]) -> int:
    """`epochs_done` of a state if it reads as a count, else 0 (`check_state` says why)."""
    done = state.get("epochs_done")
    if isinstance(done, np.ndarray) and done.shape == () and done.dtype.kind in "iu":
        return int(done)
    return 0


def _tensor(array: np.ndarray, dtype: type[np.generic], device: torch.device) -> Tensor:
    """`array` as a tensor: its own memory on CPU (no copy), a copy on another device.

    Ray's object store hands trials read-only arrays, and torch warns that writing to a tensor
    over one is undefined. Nothing writes to these tensors (batches are gathered into separate
    buffers), so the warning is silenced instead of copying the data (300 MB) per trial.
    """
    array = np.ascontiguousarray(array, dtype=dtype)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable",
                                category=UserWarning)
        return torch.from_numpy(array).to(device)


def _host_copy(tensor: Tensor) -> np.ndarray:
    """A host (numpy) copy of `tensor`, in its memory order: one copy on any device."""
    return tensor.detach().to("cpu", copy=True).numpy()


def _numpy_dtype(tensor: Tensor) -> np.dtype:
    """The numpy dtype of `tensor`'s elements."""
    return torch.empty(0, dtype=tensor.dtype).numpy().dtype


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Run the block with `n` intra-op threads (None: unchanged), then restore the count."""
    previous = torch.get_num_threads()
    if n is not None and n != previous:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
