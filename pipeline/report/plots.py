"""The report's figures: per study, validation accuracy and the losses per epoch for every
configuration on shared axes (the homework's Figures 2-10), training time by batch size (as a
ratio to the baseline batch's beside the published ratio), and for a sampled study validation
accuracy against each sampled hyperparameter.

Uses the Agg backend (imported through `pipeline.plots`): figures are files, never windows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from pipeline.plots import plt

PANELS = (("val/acc", "validation accuracy"), ("train/loss", "training loss (mean)"),
          ("val/loss", "validation loss"))
CURVE_KEYS = tuple(key for key, _ in PANELS)


def mean_curves(histories: Sequence[pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean and std per epoch over seeds (NaN where a seed stopped early, e.g. diverged)."""
    stacked = pd.concat(list(histories), keys=range(len(histories)))
    by_epoch = stacked.replace([np.inf, -np.inf], np.nan).groupby(level=1)
    return by_epoch.mean(), by_epoch.std()


def plot_study(curves: Mapping[str, Sequence[pd.DataFrame]], title: str, out: Path) -> Path:
    """One panel per metric, one line per configuration (mean over its seeds, band = ±std)."""
    fig, axes = plt.subplots(1, len(PANELS), figsize=(15, 4.2))
    for label, histories in curves.items():
        if not histories:
            continue
        mean, std = mean_curves(histories)
        for ax, (key, _) in zip(axes, PANELS, strict=True):
            if key not in mean or mean[key].isna().all():
                continue
            line, = ax.plot(mean.index, mean[key], marker=".", label=label)
            if len(histories) > 1:
                ax.fill_between(mean.index, mean[key] - std[key], mean[key] + std[key],
                                color=line.get_color(), alpha=0.15)
    for ax, (key, name) in zip(axes, PANELS, strict=True):
        ax.set(xlabel="epoch", ylabel=name, title=name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if key.endswith("loss") and _positive(ax):
            ax.set_yscale("log")  # a diverging configuration would flatten every other curve
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def _positive(ax: plt.Axes) -> bool:
    values = [np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()]
    finite = np.concatenate(values)[np.isfinite(np.concatenate(values))] if values else []
    return len(finite) > 0 and bool((finite > 0).all()) and finite.max() / finite.min() > 20


def plot_train_time(table: pd.DataFrame, ratio: str, title: str, out: Path) -> Path:
    """Training time per configuration: seconds here, and as a ratio to the baseline batch's
    (column `ratio`) beside the published ratio (seconds from another machine do not compare)."""
    fig, (seconds_ax, ratio_ax) = plt.subplots(1, 2, figsize=(10, 4))
    positions = np.arange(len(table))
    measured = table["train_time_s"].to_numpy(dtype=float)
    errors = table.get("train_time_s_std", pd.Series(np.nan, index=table.index)).fillna(0)
    seconds_ax.bar(positions, measured, 0.6, yerr=errors.to_numpy(dtype=float))
    seconds_ax.set(ylabel="training time (s)", title="measured (this machine)")
    ratio_ax.bar(positions - 0.2, table[ratio].to_numpy(dtype=float), 0.4, label="measured")
    if f"{ratio}_ref" in table and table[f"{ratio}_ref"].notna().any():
        ratio_ax.bar(positions + 0.2, table[f"{ratio}_ref"].to_numpy(dtype=float), 0.4,
                     label="published")
    base = ratio.removeprefix("time_ratio_vs_")
    ratio_ax.set(ylabel=f"time / batch {base}'s", title=f"relative to batch {base}")
    ratio_ax.legend(fontsize="small")
    for ax in (seconds_ax, ratio_ax):
        ax.set_xticks(positions, table["config"].tolist())
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


# How each kind of trial is drawn against a sampled hyperparameter.
SAMPLED_STYLES: dict[str, dict[str, object]] = {
    "finished": {"marker": "o", "color": "tab:blue", "label": "finished"},
    "stopped": {"marker": "o", "facecolors": "none", "edgecolors": "tab:orange",
                "label": "stopped early (val acc at the epoch it stopped)"},
    "winner": {"marker": "*", "s": 160, "color": "tab:green", "label": "winner"},
}


def plot_sampled(rows: pd.DataFrame, kinds: Mapping[str, str], drawn_as: pd.Series,
                 title: str, out: Path) -> Path:
    """Validation accuracy against each sampled hyperparameter, one panel each; `drawn_as`
    names each row's style (finished, stopped, winner; anything else is not drawn); a log
    x-axis for log-uniform draws."""
    params = [k for k in kinds if k in rows]
    fig, axes = plt.subplots(1, max(1, len(params)), figsize=(4.5 * max(1, len(params)), 4),
                             squeeze=False)
    for ax, param in zip(axes[0], params, strict=False):
        x = _axis_values(ax, rows[param], kinds[param])
        for kind, style in SAMPLED_STYLES.items():
            chosen = (drawn_as == kind).to_numpy()
            if chosen.any():
                ax.scatter(x[chosen], rows.loc[chosen, "val/acc"].to_numpy(dtype=float),
                           **style)
        ax.set(xlabel=f"{param} ({kinds[param]})", ylabel="validation accuracy", title=param)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def _axis_values(ax: plt.Axes, values: pd.Series, kind: str) -> np.ndarray:
    """x positions of `values`: numbers as they are (log axis for loguniform), categories
    (a choice among words) at 0, 1, ... with their names as tick labels."""
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():
        if kind == "loguniform":
            ax.set_xscale("log")
        return numeric.to_numpy(dtype=float)
    names = sorted(values.astype(str).unique())
    ax.set_xticks(range(len(names)), names)
    return values.astype(str).map({n: i for i, n in enumerate(names)}).to_numpy(dtype=float)
