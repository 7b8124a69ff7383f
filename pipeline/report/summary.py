"""The trial frame made honest before any table or CSV uses it, and summary.csv made from it:
a diverged trial's accuracies are not results (NaN), a param that does not apply to a model is
left empty, and what the trials' artifacts say (constant prediction, val_correct.npy) is a column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.models import find_spec
from pipeline.report.runs import TrialArtifacts, one_row_per_run

# A diverged trial's last values come from NaN weights (test/acc) or from before the loss blew
# up (the rest): neither describes a trained model.
DIVERGED_BLANK = ("train/acc", "val/acc", "test/acc", "val/loss")
INT_COLUMNS = ("batch_size", "hidden_size", "layers", "epochs", "seed")


def not_applicable(model: str) -> tuple[str, ...]:
    """Params that mean nothing for `model` (its learner ignores them), as its spec says; none
    known for a model that has left the registry."""
    spec = find_spec(model)
    return spec.not_applicable if spec is not None else ()


def blank_diverged(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with every accuracy of a diverged trial set to NaN."""
    frame = frame.copy()
    columns = [c for c in DIVERGED_BLANK if c in frame]
    frame.loc[frame["diverged"].astype(bool), columns] = np.nan
    return frame


def add_artifact_flags(frame: pd.DataFrame, artifacts: TrialArtifacts) -> pd.DataFrame:
    """`constant_prediction` (True, False, or empty when unknown) and `val_correct_logged`."""
    frame = frame.copy()
    at = frame.columns.get_loc("stopped_epoch") + 1
    frame.insert(at, "val_correct_logged", frame["run_id"].isin(list(artifacts.correct)))
    frame.insert(at, "constant_prediction",
                 frame["run_id"].map(artifacts.constant).astype("boolean"))
    return frame


def summary_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """summary.csv: one row per trial (a run shared by several studies once, `studies` naming
    them); a param that does not apply to the trial's model empty."""
    frame = one_row_per_run(trials).copy()
    for column in INT_COLUMNS:
        if column in frame:
            frame[column] = frame[column].astype("Int64")  # an empty cell, not "16.0"
    for model in frame["model"].dropna().unique():
        rows = frame["model"] == model
        for param in not_applicable(str(model)):
            if param in frame:
                frame[param] = frame[param].astype(object)
                frame.loc[rows, param] = None
    return frame
