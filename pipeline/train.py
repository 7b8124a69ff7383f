"""The epoch loop shared by every model: train one pass, evaluate, yield the epoch's metrics.

Model families plug in through the `Learner` protocol; the loop knows nothing about numpy or
torch. Metric names follow the project convention (`train/loss`, `val/acc`, ...).

A learner's complete training state (`Learner.get_state`) is a flat dict of numpy arrays, so a
checkpoint is `np.savez` / `np.load(allow_pickle=False)` and never a pickle. Every state holds
`kind` (the model name, 0-d text) and `epochs_done` (0-d int64) beside the learner's own arrays;
facts that are not arrays (a numpy generator's state) are JSON text in a 0-d unicode array
(`json_array`). `check_state` is the shared validation.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from pipeline.errors import UserError

Split = Literal["train", "val", "test"]


@dataclass(frozen=True)
class Evaluation:
    """Loss, accuracy and predicted labels of a model on one split."""

    loss: float
    acc: float
    predictions: np.ndarray


@dataclass(frozen=True)
class EpochLoss:
    """Training loss of one epoch: `mean` is what `train/loss` reports; `total` is the sum over
    samples (numpy models) or batches (torch), the figure the homework quotes for its MLP."""

    mean: float
    total: float


class Learner(Protocol):
    """A model bound to its data and optimiser, seeded at construction."""

    def train_epoch(self) -> EpochLoss:
        """One pass over the training set in a fresh seeded order."""
        ...

    def evaluate(self, split: Split) -> Evaluation:
        """Whole-split evaluation without updating anything."""
        ...

    def state_dict(self) -> dict[str, np.ndarray]:
        """The trained parameters, as numpy arrays (for the weights artifact)."""
        ...

    def get_state(self) -> dict[str, np.ndarray]:
        """Everything the next epoch depends on (weights, optimiser state, RNG state, epochs
        done), as copies: training on afterwards does not change the returned arrays."""
        ...

    def set_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore a `get_state` of the same model and shapes, in place (the fast loops hold
        views of the weights); raises `UserError` for any other state, changing nothing."""
        ...


@dataclass
class EpochRecord:
    """Metrics of one epoch (step = epoch, counted from 1)."""

    epoch: int
    metrics: dict[str, float] = field(default_factory=dict)
    diverged: bool = False


def fit(learner: Learner, epochs: int, start_epoch: int = 1) -> Iterator[EpochRecord]:
    """Train epochs `start_epoch` .. `epochs` (the run's last epoch, e.g. `config.epochs`),
    yielding each epoch's metrics; a learner restored after k epochs resumes with
    `start_epoch=k + 1`, so its records are numbered as in an uninterrupted run.

    Stops early, after yielding a record flagged `diverged`, as soon as the training loss is
    NaN or infinite: a diverged run keeps the metrics it had and never crashes or hangs.
    """
    for epoch in range(start_epoch, epochs + 1):
        start = time.perf_counter()
        loss = learner.train_epoch()
        elapsed = time.perf_counter() - start
        metrics = {"train/loss": loss.mean, "train/loss_sum": loss.total, "epoch_time_s": elapsed}
        if not (math.isfinite(loss.mean) and math.isfinite(loss.total)):
            yield EpochRecord(epoch, metrics, diverged=True)
            return
        for split in ("train", "val"):
            evaluation = learner.evaluate(split)
            metrics[f"{split}/acc"] = evaluation.acc
            if split == "val":
                metrics["val/loss"] = evaluation.loss
        yield EpochRecord(epoch, metrics)


# ---------------------------------------------------------------- learner state helpers

# Expected arrays of a state: name -> (shape, dtype); dtype `str` means any 0-d text, None any
# floating dtype.
StateSpec = Mapping[str, tuple[tuple[int, ...], Any]]


def json_array(value: Any) -> np.ndarray:
    """`value` as JSON text in a 0-d numpy unicode array (saved by `np.savez` without pickle)."""
    return np.array(json.dumps(value))


def read_json_array(state: Mapping[str, np.ndarray], key: str) -> Any:
    """The value `json_array` stored under `key`; `UserError` if it is not JSON text."""
    array = state[key]
    try:
        if array.ndim != 0 or array.dtype.kind != "U":
            raise ValueError("not 0-d text")
        return json.loads(str(array[()]))
    except ValueError as error:
        raise UserError(f"learner state {key!r}: expected JSON text ({error})") from None


def check_kind(state: Mapping[str, np.ndarray], kind: str) -> None:
    """Raise `UserError` unless `state` says it is a state of model `kind`."""
    found = state.get("kind")
    found_kind = (str(found[()]) if isinstance(found, np.ndarray) and found.ndim == 0
                  and found.dtype.kind == "U" else None)
    if found_kind != kind:
        raise UserError(f"learner state is of model {found_kind!r}; this learner is {kind!r}")


def check_state(state: Mapping[str, np.ndarray], kind: str, spec: StateSpec) -> int:
    """Raise `UserError` unless `state` is a state of model `kind` with exactly the arrays of
    `spec` (besides `kind` and `epochs_done`) in their shapes and dtypes; return epochs_done."""
    check_kind(state, kind)
    expected = {"kind", "epochs_done", *spec}
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        details = [f"missing {missing}"] * bool(missing) + [f"unexpected {extra}"] * bool(extra)
        raise UserError(f"learner state of {kind!r} does not fit this learner: "
                        f"{', '.join(details)} (another architecture or optimiser?)")
    done = state["epochs_done"]
    if (not isinstance(done, np.ndarray) or done.shape != () or done.dtype.kind not in "iu"
            or int(done) < 0):
        raise UserError(f"learner state epochs_done = {done!r}: expected a 0-d count >= 0")
    for name, (shape, dtype) in spec.items():
        array = state[name]
        if not isinstance(array, np.ndarray):
            raise UserError(f"learner state {name!r}: expected a numpy array, "
                            f"got {type(array).__name__}")
        if dtype is str:
            fits = array.dtype.kind == "U"
        elif dtype is None:
            fits = array.dtype.kind == "f"
        else:
            fits = array.dtype == np.dtype(dtype)
        if array.shape != tuple(shape) or not fits:
            raise UserError(f"learner state {name!r} is {array.dtype} {array.shape}; this "
                            f"learner needs {_dtype_name(dtype)} {tuple(shape)}")
    return int(done)


def _dtype_name(dtype: Any) -> str:
    return "text" if dtype is str else "a float dtype" if dtype is None else str(np.dtype(dtype))
