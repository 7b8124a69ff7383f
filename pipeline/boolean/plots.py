"""Figures for question 3, rendered to PNG bytes (matplotlib's Agg canvas, no pyplot state).

For D = 2 the four inputs are drawn in the plane with hyperplanes as lines. For other D the
inputs are drawn by their sum (how many inputs share each sum) and a hyperplane w.x + b = 0 with
w = a * (1, ..., 1) as the vertical line sum = -b / a.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from math import comb

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

COLOURS = {1: "tab:blue", -1: "tab:red"}
VIEW = 2.2  # half-width of the D = 2 view: the cube plus room for hyperplanes just outside it


@dataclass(frozen=True)
class Line:
    """The hyperplane w.x + b = 0 with its legend label; dotted when it is not a decision."""

    w: np.ndarray
    b: float
    label: str
    colour: str = "tab:green"
    dotted: bool = False


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _draw_inputs(ax, X: np.ndarray, f: np.ndarray) -> None:
    """The four points in the plane (D = 2), else input counts per sum, coloured by f."""
    for label, name in ((1, "f = +1"), (-1, "f = -1")):
        if not np.any(f == label):
            continue
        if X.shape[1] == 2:
            pts = X[f == label]
            ax.scatter(pts[:, 0], pts[:, 1], s=160, c=COLOURS[label], label=name, zorder=3)
        else:
            sums = np.unique(X.sum(axis=1)[f == label])
            counts = [comb(X.shape[1], (s + X.shape[1]) // 2) for s in sums]
            ax.bar(sums, counts, width=1.0, color=COLOURS[label], label=name)
    if X.shape[1] == 2:
        ax.set(xlim=(-VIEW, VIEW), ylim=(-VIEW, VIEW), xlabel="x1", ylabel="x2", aspect="equal")
    else:
        ax.set(xlabel="sum(x)", ylabel="inputs with this sum")


def _draw_line(ax, line: Line, two_d: bool) -> None:
    style = {"color": line.colour, "ls": ":" if line.dotted else "-", "lw": 2, "label": line.label}
    if not two_d:
        ax.axvline(-line.b / line.w[0], **style)
    elif line.w[1] != 0:
        x1 = np.array([-VIEW, VIEW])
        ax.plot(x1, -(line.w[0] * x1 + line.b) / line.w[1], **style)
    else:
        ax.axvline(-line.b / line.w[0], **style)


def class_layout(X: np.ndarray, f: np.ndarray, title: str) -> bytes:
    """The inputs coloured by their class."""
    fig = Figure(figsize=(5, 4.5))
    ax = fig.add_subplot()
    _draw_inputs(ax, X, f)
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize="small")
    return _png(fig)


def with_lines(X: np.ndarray, f: np.ndarray, panels: list[tuple[str, list[Line]]]) -> bytes:
    """One panel per (title, lines): the inputs coloured by class, with the lines over them."""
    fig = Figure(figsize=(5.2 * len(panels), 4.8))
    for k, (title, lines) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        _draw_inputs(ax, X, f)
        for line in lines:
            _draw_line(ax, line, X.shape[1] == 2)
        ax.set_title(title, fontsize="medium")
        # Below the axes: inside, the legend would hide the inputs near the corners.
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize="small")
    return _png(fig)
