"""Two-hidden-unit MLPs with integer weights for f(x) = +1 iff A <= sum(x) <= B on {-1,+1}^D.

Every hidden weight vector is +-(1, ..., 1), so a network sees x only through s = sum(x); the
attainable sums are -D, -D+2, ..., D. Let lo and hi be the smallest and largest attainable sums in
[A, B]. Both networks put their decisions at s = lo - 1 and s = hi + 1, halfway between the last
attainable sum inside and the first outside; those are integers, so the weights stay integers.
Each input then lies at infinity-norm distance |w.x + b| / ||w||_1 >= 1/D from every decision
hyperplane, so any delta with ||delta||_inf < 1/D leaves the output at f(x). When [A, B] holds no
attainable sum, both networks output -1 on all of R^D: no perturbation matters (margin infinite).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# The tightness check steps this far past the margin: enough to cross the hyperplane despite
# rounding in x + delta, little enough to show that the margin itself is the limit.
ABOVE = 1 + 1e-6


def sign(z: np.ndarray) -> np.ndarray:
    """Sign with the report's convention sign(0) = +1."""
    return np.where(z >= 0, 1, -1)


def cube(D: int) -> np.ndarray:
    """All 2^D points of {-1,+1}^D as an int64 array of shape (2^D, D)."""
    bits = (np.arange(2**D)[:, None] >> np.arange(D)) & 1
    return (2 * bits - 1).astype(np.int64)


def target(X: np.ndarray, A: int, B: int) -> np.ndarray:
    """f straight from its definition: +1 where A <= sum(x) <= B, else -1."""
    s = X.sum(axis=-1)
    return np.where((A <= s) & (s <= B), 1, -1)


def inside_sums(D: int, A: int, B: int) -> tuple[int, int]:
    """(lo, hi): the extreme attainable sums in [A, B]; lo > hi (lo = hi + 2) when none is."""
    lo = A if (A - D) % 2 == 0 else A + 1
    hi = B if (B - D) % 2 == 0 else B - 1
    return lo, hi


@dataclass(frozen=True)
class TwoUnitMLP:
    """x -> sign(v . act(W x + b) + c) with integer parameters and rows of W equal to +-ones.

    `levels[j]` is the pre-activation of hidden unit j at which that unit alone flips the output:
    its decision hyperplane is W[j] . x + b[j] = levels[j].
    """

    activation: str
    W: np.ndarray
    b: np.ndarray
    v: np.ndarray
    c: int
    levels: np.ndarray

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Outputs in {-1, +1} for inputs of shape (..., D)."""
        pre = X @ self.W.T + self.b
        h = sign(pre) if self.activation == "sign" else np.maximum(pre, 0)
        return sign(h @ self.v + self.c)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready integer parameters."""
        return {"hidden_activation": self.activation, "output_activation": "sign",
                "hidden_weights": self.W.tolist(), "hidden_biases": self.b.tolist(),
                "output_weights": self.v.tolist(), "output_bias": self.c,
                "decision_levels": self.levels.tolist()}


def sign_mlp(D: int, A: int, B: int) -> TwoUnitMLP:
    """h1 = sign(s - (lo-1)), h2 = sign((hi+1) - s), output sign(h1 + h2 - 1)."""
    lo, hi = inside_sums(D, A, B)
    ones = np.ones(D, dtype=np.int64)
    # With no attainable sum inside, lo - 1 = hi + 1 and both units would be +1 exactly on that
    # hyperplane; pulling h2 back to hi - 1 makes the two half-spaces disjoint, so the output is
    # -1 on all of R^D (margin infinite) instead of +1 on a hyperplane.
    upper = hi + 1 if lo <= hi else hi - 1
    return TwoUnitMLP("sign", np.stack([ones, -ones]), np.array([1 - lo, upper]),
                      np.array([1, 1]), -1, np.array([0, 0]))


def relu_mlp(D: int, A: int, B: int) -> TwoUnitMLP:
    """h1 = relu(lo - s), h2 = relu(s - hi): zero inside, >= 2 outside; output sign(1 - h1 - h2).

    The output bias 1 puts the decision where h1 + h2 = 1, i.e. at s = lo - 1 and s = hi + 1,
    so nothing hinges on sign(0). With no attainable sum inside (lo = hi + 2), h1 + h2 >= 2
    everywhere in R^D and the output is -1 for every input and perturbation.
    """
    lo, hi = inside_sums(D, A, B)
    ones = np.ones(D, dtype=np.int64)
    return TwoUnitMLP("relu", np.stack([-ones, ones]), np.array([lo, -hi]),
                      np.array([-1, -1]), 1, np.array([1, 1]))


def decision_units(net: TwoUnitMLP) -> list[int]:
    """Hidden units whose decision hyperplane separates outputs that differ (the ones that matter).

    Every unit depends on x through s only, and distinct decision sums are integers at least 2
    apart, so probing half a unit of s on each side of a hyperplane tells whether the output
    changes there.
    """
    units = []
    for j in range(len(net.b)):
        at = (net.levels[j] - net.b[j]) / net.W[j, 0]  # the sum s on unit j's hyperplane
        probes = np.zeros((2, net.W.shape[1]))
        probes[:, 0] = [at - 0.5, at + 0.5]  # (s, 0, ..., 0) has sum exactly s
        out = net.predict(probes)
        if out[0] != out[1]:
            units.append(j)
    return units


def _distances(net: TwoUnitMLP, X: np.ndarray, norm: float) -> tuple[np.ndarray, list[int]]:
    """Distances (dual norm of w) from each x to each hyperplane that matters: (N, units)."""
    units = decision_units(net)
    W = net.W[units]
    signed = X @ W.T + net.b[units] - net.levels[units]
    return signed / np.linalg.norm(W, ord=norm, axis=1), units


def margin(net: TwoUnitMLP, norm: float = np.inf) -> float:
    """Robustness radius in the given input norm (inf if no perturbation changes the output).

    Distance from x to {w.x + b = level} is |w.x + b - level| / ||w||_dual, dual of inf is 1.
    """
    dual = {np.inf: 1, 2: 2, 1: np.inf}[norm]
    dist, units = _distances(net, cube(net.W.shape[1]), dual)
    return float(np.abs(dist).min()) if units else math.inf


def tight_perturbation(net: TwoUnitMLP) -> tuple[np.ndarray, np.ndarray] | None:
    """An input x and a delta of inf-norm just above the margin that changes the output.

    Take the input nearest a hyperplane that matters and move every coordinate by margin * ABOVE
    along sign(w), towards the hyperplane. None when the margin is infinite.
    """
    X = cube(net.W.shape[1])
    dist, units = _distances(net, X, 1)
    if not units:
        return None
    i, k = np.unravel_index(np.argmin(np.abs(dist)), dist.shape)
    step = abs(dist[i, k]) * ABOVE * -np.sign(dist[i, k])
    return X[i], step * np.sign(net.W[units[k]])


def random_flips(net: TwoUnitMLP, f: np.ndarray, radius: float, per_input: int,
                 rng: np.random.Generator) -> tuple[int, int]:
    """(changed outputs, perturbations tried) over every cube input, ||delta||_inf <= radius.

    Half the deltas are uniform in the box, half its random corners (the worst directions for a
    sum), each scaled by a random factor in [0, 1); plus, for every input, both corners +-radius*1
    that move the sum the most.
    """
    D = net.W.shape[1]
    X = cube(D)
    dirs = rng.uniform(-1.0, 1.0, size=(per_input, len(X), D))
    dirs[::2] = np.sign(dirs[::2])
    deltas = radius * rng.uniform(0.0, 1.0, size=(per_input, len(X), 1)) * dirs
    extremes = radius * np.array([1.0, -1.0])[:, None, None] * np.ones((1, len(X), D))
    deltas = np.concatenate([deltas, extremes])
    changed = net.predict(X[None] + deltas) != f[None]
    return int(changed.sum()), changed.size
