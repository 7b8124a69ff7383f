"""The published numbers the report sets beside measured ones: `reference/hw1.csv` (the
homework's Tables 1-7) or a user's file of the same shape, matched to configurations by params.

A reference row's `config` reads like `lr=0.01;epochs=50`. A measured configuration matches when
every key but `epochs` has the same value (epochs are a budget that quick runs cap: a mismatch is
noted, not a reason to drop the published number). A published `train_loss` is the epoch's mean
loss, except for the studies in SUMMED_LOSS_STUDIES, where it is the summed loss (q1_mlp: the
homework quotes the MLP's "total train loss"); `time_s` is compared only as a ratio between rows.

A model's spec may also carry published results of other models on the same task (e.g. MedMNIST
v2's ResNets for a CNN): `model_reference_notes` turns them into notes under every table of that
model's studies, so a new model brings its own references and no report file changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.config import LONG_NAMES
from pipeline.errors import UserError
from pipeline.models import find_spec

DEFAULT_REFERENCE = Path(__file__).resolve().parents[2] / "reference" / "hw1.csv"
REQUIRED = ("study", "model", "config")
# reference column -> the report's metric name
COLUMNS = {"train_acc": "train/acc", "val_acc": "val/acc", "test_acc": "test/acc",
           "train_loss": "train/loss", "time_s": "train_time_s"}
ALIASES = LONG_NAMES  # `lr=0.01` in a reference config names learning_rate
NO_REGULARISATION = {"l2_decay": "0", "dropout": "0"}
# Studies whose published train_loss is the epoch's summed loss, not the mean (the homework
# quotes the MLP's "total train loss", 57795.7751).
SUMMED_LOSS_STUDIES = frozenset({"q1_mlp"})
PUBLISHED_N_TRAIN = 97_477  # the homework trained on OCTMNIST's whole training split


@dataclass(frozen=True)
class ReferenceMatch:
    """The published row that matches a configuration."""

    config: str
    values: dict[str, float]
    note: str


def load_reference(path: Path) -> pd.DataFrame:
    """Read and check a reference CSV; every problem is a one-line `UserError`."""
    try:
        frame = pd.read_csv(path, dtype={"study": str, "model": str, "config": str})
    except (OSError, UnicodeDecodeError, pd.errors.ParserError,
            pd.errors.EmptyDataError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        raise UserError(f"--reference {path}: cannot read ({reason}); expected a CSV with "
                        f"columns {', '.join(REQUIRED)} and published metrics") from exc
    missing = [c for c in REQUIRED if c not in frame]
    if missing:
        raise UserError(f"--reference {path}: no column '{missing[0]}'; expected columns "
                        f"{', '.join(REQUIRED)} and some of {', '.join(COLUMNS)}")
    for column in COLUMNS:
        if column in frame:
            try:
                frame[column] = pd.to_numeric(frame[column])
            except (ValueError, TypeError):
                raise UserError(f"--reference {path}: column '{column}' holds a value that is "
                                "not a number; expected numbers or empty cells") from None
    for index, text in frame["config"].fillna("").items():
        try:
            parse_config(text)
        except ValueError:
            raise UserError(f"--reference {path}: row {index + 2} config {text!r}; expected "
                            "key=value pairs separated by ';'") from None
    return frame


def parse_config(text: str) -> dict[str, str]:
    """`lr=0.01;epochs=50` -> {'learning_rate': '0.01', 'epochs': '50'}."""
    wanted: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(part)
        key, value = key.strip(), value.strip()
        if key == "regularization" and value == "none":
            wanted.update(NO_REGULARISATION)
        else:
            wanted[ALIASES.get(key, key)] = value
    return wanted


def match_reference(reference: pd.DataFrame, trial: pd.Series) -> ReferenceMatch | None:
    """The first published row of the trial's study and model whose config matches its params."""
    rows = reference[(reference["study"] == trial["study"])
                     & (reference["model"].fillna(trial["model"]) == trial["model"])]
    for _, row in rows.iterrows():
        wanted = parse_config(row["config"] if isinstance(row["config"], str) else "")
        if all(_same(trial.get(k), v) for k, v in wanted.items() if k != "epochs"):
            values = {_metric(column, trial["study"]): float(row[column])
                      for column in COLUMNS if column in row and pd.notna(row[column])}
            note = ""
            if "epochs" in wanted and not _same(trial.get("epochs"), wanted["epochs"]):
                note = (f"published after {wanted['epochs']} epochs; these runs trained "
                        f"{trial.get('epochs')}")
            return ReferenceMatch(str(row["config"]), values, note)
    return None


def _metric(column: str, study: str) -> str:
    """The report's metric for a reference column (summed loss for the studies that quote it)."""
    if column == "train_loss" and study in SUMMED_LOSS_STUDIES:
        return "train/loss_sum"
    return COLUMNS[column]


def _same(measured: Any, published: str) -> bool:
    if measured is None or (isinstance(measured, float) and math.isnan(measured)):
        return False
    try:
        return math.isclose(float(measured), float(published), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return str(measured) == published


def model_reference_notes(model: str) -> list[str]:
    """One note per source of the published results `model`'s spec carries, e.g. "Published
    for comparison (MedMNIST v2 ...): ResNet-18 (28) test acc 0.743; ..."; none for a model
    without references or no longer registered."""
    spec = find_spec(model)
    by_source: dict[str, list[str]] = {}
    for ref in spec.references if spec is not None else ():
        label = ref.metric.replace("/", " ")
        by_source.setdefault(ref.source, []).append(f"{ref.label} {label} {ref.value:.3f}")
    return [f"Published for comparison ({source}): {'; '.join(rows)}. Other models, trained "
            "elsewhere: they compare with these runs only on the same data and split."
            for source, rows in by_source.items()]
