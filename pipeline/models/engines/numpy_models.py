"""The homework's from-scratch numpy models: multi-class perceptron, multinomial logistic
regression and a one-hidden-layer ReLU MLP, each trained by per-sample SGD.

Each learner runs the seeded per-sample epoch loop and blockwise evaluation around the kernels of
`numpy_math` (in-place BLAS updates, no allocation per sample), in the trial's `dtype`: float64
by default (the homework's precision), float32 as the faster option. The bias
is kept as a separate vector `b`; `state_dict` gives the linear models' weights back in the
homework's (4, 785) layout, bias in the last column.

The training arrays may be shared read-only between processes (Ray's object store): nothing
here writes into them or copies the whole training set.

Training state (`get_state` / `set_state`, for per-epoch checkpoints): the parameter arrays in
their native layout and dtype (`param/W`, `param/b`; the MLP's `param/W1` ... `param/b2`), the
generator's state (`rng`, JSON text of `rng.bit_generator.state`: it draws each epoch's order),
`kind` and `epochs_done`. The per-sample `Workspace` buffers are rewritten by every step and are
not part of it. A restored learner continues bitwise as the saved one would have.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from threadpoolctl import threadpool_limits

from pipeline.config import TrialConfig
from pipeline.data import N_CLASSES, Splits
from pipeline.errors import UserError
from pipeline.models.engines.numpy_math import (
    DEFAULT_DTYPE,
    MLPParams,
    Workspace,
    logreg_sgd_step,
    mlp_sgd_step,
    perceptron_step,
)
from pipeline.models.learner import (
    EpochLoss,
    Evaluation,
    Learner,
    Split,
    check_state,
    json_array,
    read_json_array,
)

_EVAL_ROWS = 8192  # evaluation works in row blocks so its temporaries stay a few MB


def epoch_order(rng: np.random.Generator, n: int) -> np.ndarray:
    """The sample order of one epoch (a fresh permutation drawn from the learner's generator)."""
    return rng.permutation(n)


# ---------------------------------------------------------------- learners


class _NumpyLearner:
    """Shared by the three models: the seeded per-sample epoch loop and blockwise evaluation.

    `rng` draws the initial weights (MLP) and then one permutation per epoch; it is public so a
    benchmark can replay an epoch's order (`epoch_order(copy.deepcopy(learner.rng), n)`).
    """

    kind = ""  # the model's registry name, recorded in and checked against a saved state

    def __init__(self, data: Splits, lr: float, seed: int, dtype: np.dtype, hidden: int = 0
                 ) -> None:
        self.data = data
        self.lr = float(lr)
        self.rng = np.random.default_rng(seed)
        self.dtype = np.dtype(dtype)
        self.ws = Workspace(hidden, self.dtype)
        # The data is float32: a learner of another dtype casts each sample into this buffer.
        self._x = np.empty(data.x_train.shape[1], self.dtype)
        self.epochs_done = 0

    def _params(self) -> dict[str, np.ndarray]:
        """The live parameter arrays by name (the ones training updates in place)."""
        raise NotImplementedError

    def get_state(self) -> dict[str, np.ndarray]:
        """Copies of the parameters, the generator's state, `kind` and `epochs_done`."""
        state = {"kind": np.array(self.kind), "epochs_done": np.array(self.epochs_done, np.int64),
                 "rng": json_array(self.rng.bit_generator.state)}
        state.update({f"param/{name}": array.copy() for name, array in self._params().items()})
        return state

    def set_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore a `get_state` of this model, shapes and dtype in place; `UserError` (and
        nothing changed) for any other state."""
        params = self._params()
        spec = {"rng": ((), str),
                **{f"param/{name}": (a.shape, a.dtype) for name, a in params.items()}}
        epochs_done = check_state(state, self.kind, spec)
        rng_state = read_json_array(state, "rng")
        expected = self.rng.bit_generator.state["bit_generator"]
        if not isinstance(rng_state, dict) or rng_state.get("bit_generator") != expected:
            raise UserError(f"learner state 'rng': expected a {expected} generator state")
        try:
            self.rng.bit_generator.state = rng_state  # same generator object, new position
        except (TypeError, ValueError, KeyError) as error:
            raise UserError(f"learner state 'rng': not a valid {expected} state ({error})"
                            ) from None
        for name, array in params.items():
            np.copyto(array, state[f"param/{name}"])
        self.epochs_done = epochs_done

    def _step(self, x: np.ndarray, y: int) -> float:
        raise NotImplementedError

    def _logits(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _loss(self, logits: np.ndarray, y: np.ndarray) -> float:
        return mean_cross_entropy(logits, y)

    def train_epoch(self) -> EpochLoss:
        """One pass over the training set in a fresh seeded order, one SGD step per sample."""
        x_all, y_all = self.data.x_train, self.data.y_train
        n = len(y_all)
        order = epoch_order(self.rng, n)
        convert = x_all.dtype != self.dtype  # float64 learners cast each sample (no allocation)
        step, x_buf = self._step, self._x
        total = 0.0
        # One BLAS thread: per-sample calls are too small to split, and on a busy machine
        # threads waiting on each other made an epoch ~8x slower. Overflow is how divergence
        # shows; `fit` reads it from the non-finite loss.
        with threadpool_limits(limits=1, user_api="blas"), np.errstate(all="ignore"):
            for i, y in zip(order.tolist(), y_all[order].tolist(), strict=True):
                if convert:
                    np.copyto(x_buf, x_all[i])
                total += step(x_buf if convert else x_all[i], y)
                if not math.isfinite(total):
                    break  # the weights are inf/NaN from here on: the rest is wasted time
        self.epochs_done += 1
        return EpochLoss(mean=total / n if n else math.nan, total=total)

    def evaluate(self, split: Split) -> Evaluation:
        """Loss, accuracy and predictions on a whole split, in row blocks, nothing updated."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"split = {split!r}: expected 'train', 'val' or 'test'")
        x, y = getattr(self.data, f"x_{split}"), getattr(self.data, f"y_{split}")
        with np.errstate(all="ignore"):
            blocks = [self._logits(x[start:start + _EVAL_ROWS])
                      for start in range(0, max(len(x), 1), _EVAL_ROWS)]
            logits = np.concatenate(blocks).astype(np.float64)
            loss = self._loss(logits, y)
        predictions = logits.argmax(axis=1)
        return Evaluation(loss=loss, acc=float(np.mean(predictions == y)),
                          predictions=predictions)


class _LinearLearner(_NumpyLearner):
    """Weights (4, 784) and bias (4,) from zero: the homework's (4, 785) with a bias feature."""

    def __init__(self, data: Splits, lr: float, seed: int, dtype: np.dtype = DEFAULT_DTYPE
                 ) -> None:
        super().__init__(data, lr, seed, dtype)
        self.W = np.zeros((N_CLASSES, data.x_train.shape[1]), self.dtype)
        self.b = np.zeros(N_CLASSES, self.dtype)

    def _logits(self, x: np.ndarray) -> np.ndarray:
        return x @ self.W.T + self.b

    def _params(self) -> dict[str, np.ndarray]:
        return {"W": self.W, "b": self.b}

    def state_dict(self) -> dict[str, np.ndarray]:
        """{"W": (4, 785)}: the homework's layout, bias in the last column."""
        return {"W": np.hstack([self.W, self.b[:, None]])}


class Perceptron(_LinearLearner):
    """Multi-class perceptron; the step is scaled by the learning rate (1.0 in the homework).

    From zero weights, the learning rate only scales W (and the reported criterion), so the
    predictions are those of the homework's unscaled perceptron for any learning rate.
    """

    kind = "numpy_perceptron"

    def _step(self, x: np.ndarray, y: int) -> float:
        return perceptron_step(self.W, self.b, x, y, self.lr, self.ws)

    def _loss(self, logits: np.ndarray, y: np.ndarray) -> float:
        return mean_perceptron_criterion(logits, y)


class LogisticRegression(_LinearLearner):
    """Multinomial logistic regression, softmax cross-entropy, per-sample SGD."""

    kind = "numpy_logreg"

    def _step(self, x: np.ndarray, y: int) -> float:
        return logreg_sgd_step(self.W, self.b, x, y, self.lr, self.ws)


class MLP(_NumpyLearner):
    """One hidden ReLU layer, softmax cross-entropy, per-sample SGD, the homework's init."""

    kind = "numpy_mlp"

    def __init__(self, data: Splits, lr: float, seed: int, hidden: int,
                 dtype: np.dtype = DEFAULT_DTYPE) -> None:
        super().__init__(data, lr, seed, dtype, hidden)
        self.params = MLPParams.init(self.rng, data.x_train.shape[1], hidden, self.dtype)

    def _step(self, x: np.ndarray, y: int) -> float:
        return mlp_sgd_step(self.params, x, y, self.lr, self.ws)

    def _params(self) -> dict[str, np.ndarray]:
        return self.params.as_dict()

    def _logits(self, x: np.ndarray) -> np.ndarray:
        p = self.params
        hidden = x @ p.W1.T
        hidden += p.b1
        np.maximum(hidden, 0, out=hidden)
        return hidden @ p.W2.T + p.b2

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of W1 (hidden, 784), b1, W2 (4, hidden), b2."""
        return {name: array.copy() for name, array in self.params.as_dict().items()}


def mean_cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean softmax cross-entropy of rows of logits (max-shifted log-sum-exp)."""
    top = logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
    return float(np.mean(log_norm - logits[np.arange(len(y)), y]))


def mean_perceptron_criterion(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean of max_k(w_k x) - w_y x over the rows."""
    return float(np.mean(logits.max(axis=1) - logits[np.arange(len(y)), y]))


# ---------------------------------------------------------------- factory


def build(name: str, config: TrialConfig, data: Splits, dtype: np.dtype | None = None
          ) -> Learner:
    """The numpy learner `name` (its spec's factory), bound to `data`, seeded with
    `config.seed`, in `config.dtype` (`dtype`, if given, overrides it: for tests and
    benchmarks)."""
    from pipeline.models import get_spec

    spec = get_spec(name)
    if spec.family != "numpy":
        raise UserError(f"model = {name!r} is a {spec.family} model, not a numpy one")
    if dtype is not None:  # model_copy: the override is not a config a user wrote
        config = config.model_copy(update={"dtype": np.dtype(dtype).name})
    return spec.factory(config, data)
