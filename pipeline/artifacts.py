"""The files a finished trial leaves behind: curves, confusion matrix, config, weights, history,
and which validation images it got right.

Written to a local directory first (then uploaded by tracking), so nothing here knows MLflow.
The data files (`write_trial_files`) need no matplotlib; the figures (`write_trial_figures`)
import it on first use, so a trial's worker can render them after the trial has reported
(`pipeline.figures`) without paying matplotlib's import before its first epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from pipeline.data import CLASS_NAMES
from pipeline.trial import TrialResult

FIGURE_NAMES = ("curves.png", "confusion_matrix.png")


def history_rows(result: TrialResult) -> list[dict[str, float]]:
    """One dict per epoch: `epoch` plus that epoch's metrics."""
    return [{"epoch": r.epoch, **r.metrics} for r in result.history]


def write_trial_files(result: TrialResult, out_dir: Path) -> list[Path]:
    """Write a trial's data artifacts (history, config, weights, confusion counts, validation
    correctness) into `out_dir` and return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "history.csv", out_dir / "config.yaml", out_dir / "weights.npz"]
    pd.DataFrame(history_rows(result)).to_csv(paths[0], index=False)
    paths[1].write_text(yaml.safe_dump(result.config.model_dump(), sort_keys=False))
    np.savez(paths[2], **result.weights)
    if result.diverged:  # NaN weights: their predictions would be numbers nobody measured
        return paths
    n = result.confusion.shape[0]
    names = list(CLASS_NAMES[:n])
    paths.append(out_dir / "confusion_matrix.csv")
    pd.DataFrame(result.confusion, index=pd.Index(names, name="true"),
                 columns=names).to_csv(paths[-1])
    if result.val_correct is not None:
        # Which validation images the final model got right, in split order (the report's
        # paired tests); read it with np.load(allow_pickle=False).
        paths.append(out_dir / "val_correct.npy")
        np.save(paths[-1], np.asarray(result.val_correct, dtype=bool), allow_pickle=False)
    return paths


def write_trial_figures(result: TrialResult, title: str, out_dir: Path) -> list[Path]:
    """Render a trial's figures (learning curves; the test confusion matrix unless it
    diverged) into `out_dir` and return their paths."""
    return draw_figures(history_rows(result), None if result.diverged else result.confusion,
                        title, out_dir)


def draw_figures(history: Sequence[dict[str, float]], confusion: np.ndarray | None,
                 title: str, out_dir: Path) -> list[Path]:
    """The figures from a trial's history rows and test confusion counts (None: no matrix, the
    trial diverged), as a trial's result or its `history.csv` and `confusion_matrix.csv` hold
    them; their paths."""
    from pipeline.plots import plot_confusion, plot_curves  # matplotlib: seconds, on first use

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [plot_curves(history, title, out_dir / FIGURE_NAMES[0])] if history else []
    if confusion is not None:
        paths.append(plot_confusion(confusion, f"{title}: test set", out_dir / FIGURE_NAMES[1]))
    return paths


def write_trial_artifacts(result: TrialResult, title: str, out_dir: Path) -> list[Path]:
    """Every artifact of a trial, data files and figures, into `out_dir`."""
    return write_trial_files(result, out_dir) + write_trial_figures(result, title, out_dir)
