"""The homework's from-scratch numpy models: multi-class perceptron, multinomial logistic
regression and a one-hidden-layer ReLU MLP, each trained by per-sample SGD.

The math is the homework's; the loop is built for speed because a grid runs many of these:
weights are updated in place by BLAS rank-1 updates (`ger`: W += alpha * u v^T) instead of
allocating an outer product per sample, every per-sample buffer is preallocated, and float32 is
the default. The bias is kept as a separate vector `b`, which is the same math as the homework's
constant bias feature (`add_bias`) without copying the training set; `state_dict` gives the
linear models' weights back in the homework's (4, 785) layout, bias in the last column.

The training arrays may be shared read-only between processes (Ray's object store): nothing
here writes into them or copies the whole training set.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.linalg.blas import get_blas_funcs
from threadpoolctl import threadpool_limits

from pipeline.config import TrialConfig
from pipeline.data import N_CLASSES, Splits
from pipeline.errors import UserError
from pipeline.train import EpochLoss, Evaluation, Learner, Split

DEFAULT_DTYPE = np.float32
INIT_MEAN = 0.1  # the homework: MLP weights ~ N(0.1, 0.1^2), biases zero
INIT_STD = 0.1
_EVAL_ROWS = 8192  # evaluation works in row blocks so its temporaries stay a few MB


def epoch_order(rng: np.random.Generator, n: int) -> np.ndarray:
    """The sample order of one epoch (a fresh permutation drawn from the learner's generator)."""
    return rng.permutation(n)


# ---------------------------------------------------------------- per-sample math (tested)


@dataclass
class Workspace:
    """Preallocated per-sample buffers and the BLAS routines for one dtype."""

    hidden: int
    dtype: np.dtype
    z: np.ndarray = field(init=False)  # logits (clobbered by the softmax)
    dz: np.ndarray = field(init=False)  # dL/dz = softmax(z) - e_y
    h_pre: np.ndarray = field(init=False)  # hidden pre-activation
    h: np.ndarray = field(init=False)  # ReLU(h_pre)
    dh: np.ndarray = field(init=False)  # dL/dh_pre
    active: np.ndarray = field(init=False)  # h_pre > 0

    def __post_init__(self) -> None:
        self.dtype = np.dtype(self.dtype)
        self.z, self.dz = (np.empty(N_CLASSES, self.dtype) for _ in range(2))
        self.h_pre, self.h, self.dh = (np.empty(self.hidden, self.dtype) for _ in range(3))
        self.active = np.empty(self.hidden, bool)
        # ger: A += alpha x y^T in place on a Fortran-ordered A; axpy: y += a x in place.
        self.ger, self.axpy = get_blas_funcs(("ger", "axpy"), dtype=self.dtype)


def softmax_xent(z: np.ndarray, y: int, dz: np.ndarray) -> float:
    """Cross-entropy of logits `z` for label `y`; writes softmax(z) - e_y into `dz`.

    `z` is shifted in place by its max (stability). Huge weights give inf/NaN, never an error.
    """
    z -= z.max()
    np.exp(z, out=dz)
    total = dz.sum()
    dz /= total
    dz[y] -= 1
    # total >= 1 after the shift (the max term is exp(0)), or NaN: log is always defined.
    return math.log(total) - float(z[y])


def logreg_backprop(W: np.ndarray, b: np.ndarray, x: np.ndarray, y: int, ws: Workspace
                    ) -> float:
    """Loss of one sample; leaves dL/dz in `ws.dz` (dW = dz x^T, db = dz)."""
    np.dot(W, x, out=ws.z)
    ws.z += b
    return softmax_xent(ws.z, y, ws.dz)


def logreg_gradients(W: np.ndarray, b: np.ndarray, x: np.ndarray, y: int
                     ) -> tuple[float, dict[str, np.ndarray]]:
    """Loss and full gradients {W, b} of one sample (allocates; for tests and inspection)."""
    ws = Workspace(0, W.dtype)
    loss = logreg_backprop(W, b, x, y, ws)
    return loss, {"W": np.outer(ws.dz, x), "b": ws.dz.copy()}


def logreg_sgd_step(W: np.ndarray, b: np.ndarray, x: np.ndarray, y: int, lr: float,
                    ws: Workspace) -> float:
    """One SGD step in place: W -= lr (p - e_y) x^T, b -= lr (p - e_y). Returns the loss."""
    loss = logreg_backprop(W, b, x, y, ws)
    ws.ger(-lr, x, ws.dz, a=W.T, overwrite_a=True)  # W.T is Fortran-ordered: no copy
    ws.axpy(ws.dz, b, a=-lr)
    return loss


@dataclass
class MLPParams:
    """One hidden layer: h = ReLU(W1 x + b1), z = W2 h + b2."""

    W1: np.ndarray
    b1: np.ndarray
    W2: np.ndarray
    b2: np.ndarray

    def __post_init__(self) -> None:
        for name, array in self.as_dict().items():
            # In-place BLAS updates need C-contiguous arrays of one dtype; a copy would be silent.
            if not array.flags.c_contiguous or array.dtype != self.W1.dtype:
                raise ValueError(f"MLPParams.{name}: expected C-contiguous {self.W1.dtype}")

    @classmethod
    def init(cls, rng: np.random.Generator, n_features: int, hidden: int,
             dtype: np.dtype = DEFAULT_DTYPE) -> MLPParams:
        """The homework's init: weights ~ N(0.1, 0.1^2), biases zero."""
        def weights(rows: int, cols: int) -> np.ndarray:
            return rng.normal(INIT_MEAN, INIT_STD, size=(rows, cols)).astype(dtype)

        W1 = weights(hidden, n_features)
        W2 = weights(N_CLASSES, hidden)
        return cls(W1, np.zeros(hidden, dtype), W2, np.zeros(N_CLASSES, dtype))

    def as_dict(self) -> dict[str, np.ndarray]:
        """The parameter arrays by name (not copies)."""
        return {"W1": self.W1, "b1": self.b1, "W2": self.W2, "b2": self.b2}


def mlp_backprop(p: MLPParams, x: np.ndarray, y: int, ws: Workspace) -> float:
    """Loss of one sample; leaves ws.h, ws.dz = dL/dz and ws.dh = dL/dh_pre, which factor the
    gradients: dW2 = dz h^T, db2 = dz, dW1 = dh x^T, db1 = dh."""
    np.dot(p.W1, x, out=ws.h_pre)
    ws.h_pre += p.b1
    np.maximum(ws.h_pre, 0, out=ws.h)
    np.dot(p.W2, ws.h, out=ws.z)
    ws.z += p.b2
    loss = softmax_xent(ws.z, y, ws.dz)
    np.dot(ws.dz, p.W2, out=ws.dh)  # W2^T dz
    np.greater(ws.h_pre, 0, out=ws.active)  # ReLU'(0) = 0, as in torch
    ws.dh *= ws.active
    return loss


def mlp_gradients(p: MLPParams, x: np.ndarray, y: int) -> tuple[float, dict[str, np.ndarray]]:
    """Loss and full gradients {W1, b1, W2, b2} of one sample (allocates; for tests)."""
    ws = Workspace(p.W1.shape[0], p.W1.dtype)
    loss = mlp_backprop(p, x, y, ws)
    grads = {"W1": np.outer(ws.dh, x), "b1": ws.dh.copy(),
             "W2": np.outer(ws.dz, ws.h), "b2": ws.dz.copy()}
    return loss, grads


def mlp_sgd_step(p: MLPParams, x: np.ndarray, y: int, lr: float, ws: Workspace) -> float:
    """One SGD step in place (gradients from `mlp_backprop`, taken before any update)."""
    loss = mlp_backprop(p, x, y, ws)
    ws.ger(-lr, ws.h, ws.dz, a=p.W2.T, overwrite_a=True)
    ws.axpy(ws.dz, p.b2, a=-lr)
    ws.ger(-lr, x, ws.dh, a=p.W1.T, overwrite_a=True)
    ws.axpy(ws.dh, p.b1, a=-lr)
    return loss


def perceptron_step(W: np.ndarray, b: np.ndarray, x: np.ndarray, y: int, lr: float,
                    ws: Workspace) -> float:
    """Predict argmax(W x + b); on a mistake W[y] += lr x, W[y_hat] -= lr x (bias alike).

    Returns the perceptron criterion max_k(w_k x) - w_y x, taken before the update.
    """
    np.dot(W, x, out=ws.z)
    ws.z += b
    y_hat = int(ws.z.argmax())
    loss = float(ws.z[y_hat] - ws.z[y])
    if y_hat != y:
        ws.axpy(x, W[y], a=lr)  # rows of a C-ordered W are contiguous: updated in place
        ws.axpy(x, W[y_hat], a=-lr)
        b[y] += lr
        b[y_hat] -= lr
    return loss


# ---------------------------------------------------------------- learners


class _NumpyLearner:
    """Shared by the three models: the seeded per-sample epoch loop and blockwise evaluation.

    `rng` draws the initial weights (MLP) and then one permutation per epoch; it is public so a
    benchmark can replay an epoch's order (`epoch_order(copy.deepcopy(learner.rng), n)`).
    """

    def __init__(self, data: Splits, lr: float, seed: int, dtype: np.dtype, hidden: int = 0
                 ) -> None:
        self.data = data
        self.lr = float(lr)
        self.rng = np.random.default_rng(seed)
        self.dtype = np.dtype(dtype)
        self.ws = Workspace(hidden, self.dtype)

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
        convert = x_all.dtype != self.dtype  # only float64 learners (tests) pay for this
        step = self._step
        total = 0.0
        # One BLAS thread: per-sample calls are too small to split, and on a busy machine
        # threads waiting on each other made an epoch ~8x slower. Overflow is how divergence
        # shows; `fit` reads it from the non-finite loss.
        with threadpool_limits(limits=1, user_api="blas"), np.errstate(all="ignore"):
            for i, y in zip(order.tolist(), y_all[order].tolist(), strict=True):
                total += step(x_all[i].astype(self.dtype) if convert else x_all[i], y)
                if not math.isfinite(total):
                    break  # the weights are inf/NaN from here on: the rest is wasted time
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

    def state_dict(self) -> dict[str, np.ndarray]:
        """{"W": (4, 785)}: the homework's layout, bias in the last column."""
        return {"W": np.hstack([self.W, self.b[:, None]])}


class Perceptron(_LinearLearner):
    """Multi-class perceptron; the step is scaled by the learning rate (1.0 in the homework).

    From zero weights, the learning rate only scales W (and the reported criterion), so the
    predictions are those of the homework's unscaled perceptron for any learning rate.
    """

    def _step(self, x: np.ndarray, y: int) -> float:
        return perceptron_step(self.W, self.b, x, y, self.lr, self.ws)

    def _loss(self, logits: np.ndarray, y: np.ndarray) -> float:
        return mean_perceptron_criterion(logits, y)


class LogisticRegression(_LinearLearner):
    """Multinomial logistic regression, softmax cross-entropy, per-sample SGD."""

    def _step(self, x: np.ndarray, y: int) -> float:
        return logreg_sgd_step(self.W, self.b, x, y, self.lr, self.ws)


class MLP(_NumpyLearner):
    """One hidden ReLU layer, softmax cross-entropy, per-sample SGD, the homework's init."""

    def __init__(self, data: Splits, lr: float, seed: int, hidden: int,
                 dtype: np.dtype = DEFAULT_DTYPE) -> None:
        super().__init__(data, lr, seed, dtype, hidden)
        self.params = MLPParams.init(self.rng, data.x_train.shape[1], hidden, self.dtype)

    def _step(self, x: np.ndarray, y: int) -> float:
        return mlp_sgd_step(self.params, x, y, self.lr, self.ws)

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

# batch_size does not apply: the numpy models always train one sample at a time.
_FACTORIES: dict[str, Callable[[TrialConfig, Splits, np.dtype], _NumpyLearner]] = {
    "numpy_perceptron": lambda c, d, t: Perceptron(d, c.learning_rate, c.seed, t),
    "numpy_logreg": lambda c, d, t: LogisticRegression(d, c.learning_rate, c.seed, t),
    "numpy_mlp": lambda c, d, t: MLP(d, c.learning_rate, c.seed, c.hidden_size, t),
}


def build(name: str, config: TrialConfig, data: Splits, dtype: np.dtype = DEFAULT_DTYPE
          ) -> Learner:
    """The numpy learner `name`, bound to `data`, seeded with `config.seed`."""
    if name not in _FACTORIES:
        raise UserError(f"model = {name!r}: expected one of {sorted(_FACTORIES)}")
    # Options these models do not have (dropout, L2, ...) are refused by TrialConfig itself.
    return _FACTORIES[name](config, data, dtype)
