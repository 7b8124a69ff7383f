"""matplotlib figures: a trial's curves and confusion matrix (and, through `plt`, the report's).

Uses the Agg backend: figures are files, never windows (trials run headless on any node). A
trial's figures are drawn on `Figure` objects of their own, not through pyplot's global figure
list, because a worker renders them in a background thread (`pipeline.figures`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402,F401 - the report's figures use pyplot
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from pipeline.data import CLASS_NAMES  # noqa: E402


def plot_curves(history: Sequence[dict[str, float]], title: str, out: Path) -> Path:
    """Accuracy and loss per epoch side by side, like the homework report's figures."""
    epochs = [int(h["epoch"]) for h in history]
    fig = Figure(figsize=(10, 3.8))
    acc_ax, loss_ax = fig.subplots(1, 2)
    for key, label in (("train/acc", "train"), ("val/acc", "validation")):
        acc_ax.plot(epochs, [h.get(key, np.nan) for h in history], marker=".", label=label)
    for key, label in (("train/loss", "train"), ("val/loss", "validation")):
        loss_ax.plot(epochs, [h.get(key, np.nan) for h in history], marker=".", label=label)
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    for ax in (acc_ax, loss_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs: no "2.5"
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    return out


def plot_confusion(matrix: np.ndarray, title: str, out: Path) -> Path:
    """Confusion matrix counts (rows: true class, columns: predicted)."""
    fig = Figure(figsize=(4.6, 4.0))
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    n = matrix.shape[0]
    ticks = range(n)
    names = CLASS_NAMES[:n]
    ax.set_xticks(ticks, names)
    ax.set_yticks(ticks, names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    peak = matrix.max() if matrix.size else 0
    for i in range(n):
        for j in range(n):
            colour = "white" if matrix[i, j] > peak / 2 else "black"
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", color=colour)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    return out
