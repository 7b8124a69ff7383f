"""The report's figures: per study, validation accuracy and the losses per epoch for every
configuration on shared axes (the homework's Figures 2-10), and training time by batch size.

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


def plot_train_time(table: pd.DataFrame, title: str, out: Path) -> Path:
    """Training time per configuration: seconds here, and relative to the fastest configuration
    beside the published ratio (seconds from another machine do not compare; ratios do)."""
    fig, (seconds_ax, ratio_ax) = plt.subplots(1, 2, figsize=(10, 4))
    positions = np.arange(len(table))
    measured = table["train_time_s"].to_numpy(dtype=float)
    errors = table.get("train_time_s_std", pd.Series(np.nan, index=table.index)).fillna(0)
    seconds_ax.bar(positions, measured, 0.6, yerr=errors.to_numpy(dtype=float))
    seconds_ax.set(ylabel="training time (s)", title="measured (this machine)")
    ratio_ax.bar(positions - 0.2, measured / np.nanmin(measured), 0.4, label="measured")
    published = table.get("train_time_s_ref", pd.Series(np.nan, index=table.index))
    if published.notna().any():
        ratio_ax.bar(positions + 0.2, published / np.nanmin(published), 0.4, label="published")
    ratio_ax.set(ylabel="time / fastest configuration's", title="relative to the fastest")
    ratio_ax.legend(fontsize="small")
    for ax in (seconds_ax, ratio_ax):
        ax.set_xticks(positions, table["config"].tolist())
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
