"""The files a finished trial leaves behind: curves, confusion matrix, config, weights, history,
and which validation images it got right.

Written to a local directory first (then uploaded by tracking), so nothing here knows MLflow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from pipeline.plots import CLASS_NAMES, plot_confusion, plot_curves
from pipeline.trial import TrialResult


def history_rows(result: TrialResult) -> list[dict[str, float]]:
    """One dict per epoch: `epoch` plus that epoch's metrics."""
    return [{"epoch": r.epoch, **r.metrics} for r in result.history]


def write_trial_artifacts(result: TrialResult, title: str, out_dir: Path) -> list[Path]:
    """Write every artifact of a trial into `out_dir` and return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = history_rows(result)
    paths = [out_dir / "history.csv", out_dir / "config.yaml", out_dir / "weights.npz"]
    pd.DataFrame(rows).to_csv(paths[0], index=False)
    paths[1].write_text(yaml.safe_dump(result.config.model_dump(), sort_keys=False))
    np.savez(paths[2], **result.weights)
    if rows:
        paths.append(plot_curves(rows, title, out_dir / "curves.png"))
    if result.diverged:  # NaN weights: their predictions would be numbers nobody measured
        return paths
    n = result.confusion.shape[0]
    names = list(CLASS_NAMES[:n])
    paths.append(out_dir / "confusion_matrix.csv")
    pd.DataFrame(result.confusion, index=pd.Index(names, name="true"),
                 columns=names).to_csv(paths[-1])
    paths.append(plot_confusion(result.confusion, f"{title}: test set",
                                out_dir / "confusion_matrix.png"))
    if result.val_correct is not None:
        # Which validation images the final model got right, in split order (the report's
        # paired tests); read it with np.load(allow_pickle=False).
        paths.append(out_dir / "val_correct.npy")
        np.save(paths[-1], np.asarray(result.val_correct, dtype=bool), allow_pickle=False)
    return paths
