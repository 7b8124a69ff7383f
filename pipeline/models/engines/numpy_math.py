"""The per-sample math of the homework's from-scratch numpy models: one sample's forward pass,
backward pass and SGD update for multinomial logistic regression and a one-hidden-layer ReLU MLP,
and the multi-class perceptron's step (tested exactly against torch autograd and np.outer).

The math is the homework's; the code is built for speed because a grid runs many per-sample
loops: weights are updated in place by BLAS rank-1 updates (`ger`: W += alpha * u v^T) instead
of allocating an outer product per sample, and every per-sample buffer is preallocated in a
`Workspace` (only the `*_gradients` helpers, for tests, allocate). The bias is kept as a
separate vector `b`, which is the same math as the homework's constant bias feature (`add_bias`)
without copying the training set. Nothing here writes into a sample `x`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.linalg.blas import get_blas_funcs

from pipeline.data import N_CLASSES

DEFAULT_DTYPE = np.float64  # the homework's precision; float32 is the opt-in faster one
INIT_MEAN = 0.1  # the homework: MLP weights ~ N(0.1, 0.1^2), biases zero
INIT_STD = 0.1


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
