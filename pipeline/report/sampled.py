"""A sampled study (random or Optuna search, parent run tagged `medgrid.sampled`): every trial
is its own configuration, so instead of the per-configuration table the report shows the top k
trials by validation accuracy (finished ones first, then those the scheduler stopped early) and
one figure of validation accuracy against each sampled hyperparameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import SHORT_NAMES
from pipeline.report.notes import table_caption, trouble_notes, winner_notes
from pipeline.report.plots import plot_sampled
from pipeline.report.reference import model_reference_notes
from pipeline.report.stats import add_verdicts, config_samples, config_stats, outcome
from pipeline.report.tables import ReportTable, table_metrics

TOP_K = 10


def sampled_labels(rows: pd.DataFrame, kinds: Mapping[str, str]) -> pd.Series:
    """A label per trial from its sampled values to 3 significant digits, e.g.
    'lr=0.0123 dropout=0.234' (made unique with '#2', '#3' where two round alike)."""
    labels = []
    for _, row in rows.iterrows():
        labels.append(" ".join(f"{SHORT_NAMES.get(k, k)}={_short(row[k])}" for k in kinds
                               if k in rows) or str(row["run_name"]))
    seen: dict[str, int] = {}
    unique = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return pd.Series(unique, index=rows.index, dtype=object)


def _short(value: object) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{value:.3g}"
    return str(value)


def sampled_table(frame: pd.DataFrame, study: str, kinds: Mapping[str, str],
                  sizes: Mapping[str, int | None], correct: Mapping[str, np.ndarray],
                  k: int = TOP_K) -> ReportTable:
    """The top `k` trials of a sampled study, with the winner and paired tests against it."""
    rows = frame[frame["study"] == study]
    metrics = table_metrics(str(rows["model"].iloc[0]))
    samples = config_samples(rows, correct)
    table = add_verdicts(config_stats(rows, metrics, sizes), samples)
    first = rows.groupby("config", sort=False).first()
    table["run_name"] = table["config"].map(first["run_name"])
    table["run_id"] = table["config"].map(first["run_id"])
    rank = np.select([table["eligible"].astype(bool), table["verdict"].str.startswith("stopped")],
                     [0, 1], 2)
    order = np.lexsort((-table["val/acc"].fillna(-1).to_numpy(), rank))
    top = table.iloc[order[:k]].reset_index(drop=True)
    drawn = ", ".join(f"{p} ({kind})" for p, kind in kinds.items())
    notes = [f"Top {len(top)} of {len(table)} trials by validation accuracy: finished trials "
             "first, then those the scheduler stopped early; all trials are in summary.csv.",
             *_left_out(rows, top), *winner_notes(top, sizes), *trouble_notes(rows),
             *model_reference_notes(str(rows["model"].iloc[0]))]
    caption = f"Sampled: {drawn}. {table_caption(top, sizes)}"
    return ReportTable(f"Top {k} trials of a sampled study by validation accuracy", study, metrics,
                       "sampled values", top, notes, 50.0, None, caption, ("run_name",),
                       samples, f"{study}_top{k}")


def _left_out(rows: pd.DataFrame, top: pd.DataFrame) -> list[str]:
    """What the top-k table does not show, by outcome."""
    rest = rows[~rows["config"].isin(top["config"])]
    if rest.empty:
        return []
    counts = rest.apply(outcome, axis=1).value_counts()
    return [f"Not shown: {', '.join(f'{n} {o}' for o, n in counts.items())}."]


def sampled_figure(frame: pd.DataFrame, table: ReportTable, kinds: Mapping[str, str],
                   title: str, out: Path) -> str:
    """Draw the study's figure into `out`; return its caption's description."""
    rows = frame[frame["study"] == table.study]
    winner = table.data.loc[table.data["verdict"] == "winner", "config"]
    drawn_as = rows.apply(outcome, axis=1).where(lambda o: o.isin(["finished", "stopped"]), "")
    if not winner.empty:
        drawn_as[rows["config"] == winner.iloc[0]] = "winner"
    plot_sampled(rows, kinds, drawn_as, title, out)
    hidden = int((drawn_as == "").sum())
    axes = ", ".join(f"{p} ({'log axis' if kind == 'loguniform' else kind})"
                     for p, kind in kinds.items())
    return (f"validation accuracy of every trial against each sampled hyperparameter: {axes}; "
            "filled: finished, hollow: stopped early by the scheduler (accuracy at the epoch it "
            "stopped), star: the winner; n = 1 seed per trial"
            + (f"; {hidden} trial{'s' * (hidden > 1)} without a validation accuracy (diverged, "
               "failed) not drawn" if hidden else "") + ".")
