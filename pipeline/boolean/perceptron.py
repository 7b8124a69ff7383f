"""Question 3a: a single perceptron on the four points of {-1,+1}^2, and which labellings a line
can realise there.

For [A, B] = [-1, 1] the +1 points are (-1, 1) and (1, -1), the -1 points (-1, -1) and (1, 1).
A line w.x + b >= 0 on the first two and < 0 on the last two is impossible: adding the two
inequalities of each pair gives 2b >= 0 and 2b < 0. So no perceptron gets all four right.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.boolean.nets import cube, sign, target

N_ANGLES, N_OFFSETS = 360, 201


@dataclass(frozen=True)
class PerceptronResult:
    """The best (pocket) weights a perceptron reached during training, and their accuracy."""

    w: np.ndarray
    b: float
    correct: int
    total: int
    epochs: int

    @property
    def accuracy(self) -> float:
        """Fraction of the training points classified correctly by the best weights."""
        return self.correct / self.total


def train_perceptron(X: np.ndarray, y: np.ndarray, epochs: int = 100,
                     seed: int = 0) -> PerceptronResult:
    """Rosenblatt's rule (w += y x, b += y on a mistake), keeping the best weights seen.

    On non-separable data the rule cycles for ever, so the "pocket" keeps the best state.
    """
    rng = np.random.default_rng(seed)
    w, b = np.zeros(X.shape[1]), 0.0
    best = PerceptronResult(w.copy(), b, int((sign(X @ w + b) == y).sum()), len(y), epochs)
    for _ in range(epochs):
        for i in rng.permutation(len(y)):
            if sign(X[i] @ w + b) != y[i]:
                w, b = w + y[i] * X[i], b + float(y[i])
                correct = int((sign(X @ w + b) == y).sum())
                if correct > best.correct:
                    best = PerceptronResult(w.copy(), b, correct, len(y), epochs)
    return best


def line_labellings(X: np.ndarray, n_angles: int = N_ANGLES,
                    n_offsets: int = N_OFFSETS) -> set[tuple[int, ...]]:
    """The labellings of the rows of X that a grid of lines sign(w.x + b) realises.

    w runs over unit vectors at n_angles angles, b over n_offsets values spanning every
    point's projection (|w.x| <= ||x||_2), so each line through the points' hull is met.
    """
    theta = np.linspace(0.0, 2 * np.pi, n_angles, endpoint=False)
    W = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    reach = float(np.linalg.norm(X, axis=1).max()) * 1.05
    offsets = np.linspace(-reach, reach, n_offsets)
    z = (X @ W.T)[:, :, None] + offsets  # (points, angles, offsets)
    patterns = sign(z).reshape(len(X), -1).T
    return {tuple(int(v) for v in row) for row in np.unique(patterns, axis=0)}


@dataclass(frozen=True)
class PerceptronStudy:
    """A perceptron trained on the 4 inputs of D = 2, and whether any line separates f there."""

    result: PerceptronResult
    separable: bool
    labellings: int

    def describe(self) -> str:
        """One line for the summary."""
        r = self.result
        line = (f"{r.w[0]:+g} x1 {r.w[1]:+g} x2 {r.b:+g} = 0" if np.any(r.w)
                else f"none (w = 0: constant output sign({r.b:g}))")
        verdict = ("f's is among them" if self.separable else
                   "f's is not: no line separates f, so no perceptron reaches 4/4")
        return (f"perceptron (D = 2): best {r.correct}/{r.total} correct in {r.epochs} epochs, "
                f"line {line}; a {N_ANGLES} x {N_OFFSETS} grid of lines realises "
                f"{self.labellings} of the 16 labellings of the 4 inputs, {verdict}")


def perceptron_study(A: int, B: int, epochs: int = 100, seed: int = 0) -> PerceptronStudy:
    """Train a perceptron on f over {-1,+1}^2 and test f's labelling against all line labellings."""
    X = cube(2).astype(float)
    f = target(X, A, B)
    found = line_labellings(X)
    return PerceptronStudy(train_perceptron(X, f, epochs, seed), tuple(int(v) for v in f) in found,
                           len(found))
