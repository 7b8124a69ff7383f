"""What every model is to the epoch loop: a `Learner` bound to its data, and the values it
returns (`Evaluation`, `EpochLoss`), with the shared helpers for its checkpointable state.

A learner's complete training state (`Learner.get_state`) is a flat dict of numpy arrays, so a
checkpoint is `np.savez` / `np.load(allow_pickle=False)` and never a pickle. Every state holds
`kind` (the model name, 0-d text) and `epochs_done` (0-d int64) beside the learner's own arrays;
facts that are not arrays (a numpy generator's state) are JSON text in a 0-d unicode array
(`json_array`). `check_state` is the shared validation.

It lives with the models (not with the loop in `pipeline.train`) so that models never import the
loop: the loop imports the models.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
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
