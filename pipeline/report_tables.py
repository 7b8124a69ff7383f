"""The homework's tables from the tidy trial frame: one row per configuration (seeds pooled),
the winner by validation accuracy, the published numbers beside, and what to say under each.

A configuration is a study's trials that share every param except the seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.report_reference import match_reference
from pipeline.report_stats import add_verdicts, config_stats, outcome, varying_params

ACCURACIES = ("train/acc", "val/acc", "test/acc")
LOSS_ACCURACIES = ("train/loss", "val/acc", "test/acc")
OFF_WHEN_ZERO = ("l2_decay", "dropout")  # a regulariser at 0 is "off": left out of labels
SHORT = {"learning_rate": "lr", "batch_size": "batch", "l2_decay": "l2", "hidden_size": "hidden"}


@dataclass(frozen=True)
class TableSpec:
    """How the homework shaped a study's table."""

    number: int | None
    title: str
    metrics: tuple[str, ...]
    config_header: str = "config"
    order: float = 100.0


SPECS = {
    "q1_perceptron": TableSpec(1, "Perceptron's final accuracies", ACCURACIES, order=1),
    "q1_logreg": TableSpec(2, "Logistic regression final accuracies", ACCURACIES, "η", 2),
    "q1_mlp": TableSpec(None, "Multi-layer perceptron (numpy) final accuracies", ACCURACIES,
                        order=2.5),
    "q2_logreg": TableSpec(4, "Learning rate influence in performance (logistic regression, "
                           "PyTorch)", LOSS_ACCURACIES, "η", 4),
    "q2_batch": TableSpec(5, "Batch size influence in the model's performance",
                          LOSS_ACCURACIES, "batch size", 5),
    "q2_lr": TableSpec(6, "Learning rate influence in the model's performance",
                       LOSS_ACCURACIES, "η", 6),
    "q2_reg": TableSpec(7, "Regularization influence in the model's performance",
                        LOSS_ACCURACIES, "regularization", 7),
}
COMPARISON = TableSpec(3, "Performance of the different models", ACCURACIES, "model", 3)
COMPARED = (("Perceptron", "q1_perceptron"), ("Logistic Regression", "q1_logreg"),
            ("MLP", "q1_mlp"))


@dataclass
class ReportTable:
    """One table of the report: its rows (one per configuration) and what to say under it."""

    key: str
    title: str
    study: str | None
    metrics: tuple[str, ...]
    config_header: str
    data: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    order: float = 100.0


def spec_for(study: str, frame: pd.DataFrame) -> TableSpec:
    """The homework's shape for a known study, a generic one otherwise; time when batch varies."""
    rows = frame[frame["study"] == study]
    spec = SPECS.get(study)
    if spec is None:
        numpy = str(rows["model"].iloc[0]).startswith("numpy_")
        spec = TableSpec(None, "Configurations compared", ACCURACIES if numpy
                         else LOSS_ACCURACIES)
    if "batch_size" in varying_params(rows) and "train_time_s" not in spec.metrics:
        spec = TableSpec(spec.number, spec.title, (*spec.metrics, "train_time_s"),
                         spec.config_header, spec.order)
    return spec


def time_studies(frame: pd.DataFrame) -> list[str]:
    """Studies whose table shows training time (their batch size varies)."""
    return [s for s in frame["study"].unique()
            if "train_time_s" in spec_for(s, frame).metrics]


def label_configs(frame: pd.DataFrame) -> pd.Series:
    """A short label per trial naming its configuration within its study, e.g. 'lr=0.1'."""
    labels = pd.Series("", index=frame.index, dtype=object)
    for _, rows in frame.groupby("study", sort=False):
        keys = varying_params(rows)
        for index, row in rows.iterrows():
            parts = [f"{SHORT.get(k, k)}={_text(row[k])}" for k in keys
                     if not (k in OFF_WHEN_ZERO and row[k] == 0)]
            labels[index] = " ".join(parts) or ("baseline" if keys else str(row["model"]))
    return labels


def _text(value: Any) -> str:
    return str(int(value)) if isinstance(value, (int, np.integer)) else str(value)


def attach_reference(table: pd.DataFrame, rows: pd.DataFrame, reference: pd.DataFrame | None,
                     metrics: tuple[str, ...]) -> tuple[pd.DataFrame, list[str]]:
    """`<metric>_ref` and `<metric>_diff` (measured - published) per row, and notes on
    settings that differ from the published run (e.g. fewer epochs)."""
    table = table.copy()
    by_note: dict[str, list[str]] = {}
    refs, configs = [], []
    for label in table["config"]:
        first = rows[rows["config"] == label].iloc[0]
        match = match_reference(reference, first) if reference is not None else None
        refs.append(match.values if match else {})
        configs.append(match.config if match else "")
        if match and match.note:
            by_note.setdefault(match.note, []).append(str(label))
    for metric in metrics:
        table[f"{metric}_ref"] = [r.get(metric, np.nan) for r in refs]
        table[f"{metric}_diff"] = table[metric] - table[f"{metric}_ref"]
    table["ref_config"] = configs
    notes = [f"{', '.join(labels)}: {note}." for note, labels in by_note.items()]
    return table, notes


def time_note(table: pd.DataFrame) -> list[str]:
    """The slowest configuration's time over the fastest's, measured and published."""
    timed = table.dropna(subset=["train_time_s"])
    timed = timed[timed["train_time_s"] > 0]
    if len(timed) < 2:
        return []
    times = timed["train_time_s"]
    slow, fast = timed.loc[times.idxmax()], timed.loc[times.idxmin()]
    if slow["config"] == fast["config"]:
        return []
    text = (f"Training time {slow['config']} / {fast['config']}: "
            f"{slow['train_time_s'] / fast['train_time_s']:.1f}x here")
    if pd.notna(slow.get("train_time_s_ref")) and fast.get("train_time_s_ref", 0) > 0:
        text += f", {slow['train_time_s_ref'] / fast['train_time_s_ref']:.1f}x published"
    return [text + "."]


def build_tables(frame: pd.DataFrame, reference: pd.DataFrame | None,
                 sizes: dict[str, int | None]) -> list[ReportTable]:
    """Every study's table, and Table 3 (the models compared) when its studies ran."""
    studies = sorted(frame["study"].unique(), key=lambda s: spec_for(s, frame).order)
    tables = [study_table(frame, study, reference, sizes) for study in studies]
    comparison = comparison_table(tables, sizes)
    if comparison is not None:
        tables.append(comparison)
    return sorted(tables, key=lambda t: t.order)


def study_table(frame: pd.DataFrame, study: str, reference: pd.DataFrame | None,
                sizes: dict[str, int | None]) -> ReportTable:
    """One study's configurations with seeds pooled, verdicts and published numbers."""
    rows = frame[frame["study"] == study]
    spec = spec_for(study, frame)
    table = add_verdicts(config_stats(rows, spec.metrics, sizes))
    table, reference_notes = attach_reference(table, rows, reference, spec.metrics)
    notes = winner_notes(table, sizes) + trouble_notes(rows) + reference_notes
    if "train_time_s" in spec.metrics:
        notes += time_note(table)
    stem = f"table{spec.number}_{study}" if spec.number else f"table_{study}"
    return ReportTable(stem, _title(spec), study, spec.metrics, spec.config_header, table, notes,
                       spec.order)


def comparison_table(tables: list[ReportTable], sizes: dict[str, int | None]
                     ) -> ReportTable | None:
    """Table 3: each model's winning configuration side by side (None without two models)."""
    by_study = {t.study: t for t in tables}
    records = []
    for model, study in COMPARED:
        if study not in by_study:
            continue
        data = by_study[study].data
        winner = data[data["verdict"] == "winner"]
        row = (winner if not winner.empty else data.head(1)).iloc[0]
        keep = [c for c in row.index if c.split("_")[0] in ACCURACIES or c in
                ("n", "trials", "status", "eligible", "ref_config")]
        records.append({"config": model, "setting": row["config"], **row[keep].to_dict()})
    if len(records) < 2:
        return None
    table = add_verdicts(pd.DataFrame(records))
    notes = ["Each model's row is its study's winner by validation accuracy.",
             *winner_notes(table, sizes)]
    spec = COMPARISON
    return ReportTable("table3_models", _title(spec), None, spec.metrics, spec.config_header,
                       table, notes, spec.order)


def _title(spec: TableSpec) -> str:
    return f"Table {spec.number}: {spec.title}" if spec.number else spec.title


def measured(row: pd.Series, metric: str) -> str:
    """'0.8246 ± 0.0021' (mean ± std over seeds) or '0.8246' for one seed."""
    digits = 1 if metric == "train_time_s" else 4
    value, std = row.get(metric, np.nan), row.get(f"{metric}_std", np.nan)
    if pd.isna(value):
        return "—"
    return f"{value:.{digits}f}" + (f" ± {std:.{digits}f}" if pd.notna(std) else "")


def winner_notes(table: pd.DataFrame, sizes: dict[str, int | None]) -> list[str]:
    """What a reader should take from a table: the winner, its rivals within noise, and how
    far a test accuracy on this test set can be trusted."""
    winner = table[table["verdict"] == "winner"]
    if winner.empty:
        return ["No winner: no configuration has a finished, non-diverged trial."]
    best = winner.iloc[0]
    notes = [f"Winner by validation accuracy: {best['config']} (val acc "
             f"{measured(best, 'val/acc')}, test acc {measured(best, 'test/acc')}, "
             f"n = {best['n']})."]
    close = table.loc[table["verdict"] == "within noise", "config"].tolist()
    if close:
        notes.append(f"Within noise of the winner (95% intervals of val acc overlap): "
                     f"{', '.join(close)}: this sweep cannot tell them apart.")
    elif (table["verdict"] == "below").any():
        notes.append("The winner's lead on val acc exceeds the 95% intervals: a real difference "
                     "on this validation set.")
    eligible = table[table["eligible"] & table["test/acc"].notna()]
    by_test = eligible.loc[eligible["test/acc"].idxmax()] if not eligible.empty else best
    if by_test["config"] != best["config"]:
        notes.append(f"Test accuracy alone would have picked {by_test['config']} "
                     f"({measured(by_test, 'test/acc')}); the choice uses validation accuracy "
                     "only, so the test set stays an unbiased check.")
    n_test, p = sizes.get("n_test"), best["test/acc"]
    if n_test and pd.notna(p):
        half = 1.96 * math.sqrt(p * (1 - p) / n_test)
        notes.append(f"A test accuracy near {p:.2f} on {n_test} images is known to ±{half:.4f} "
                     "(95%): smaller test differences are noise.")
    diverged = table.loc[table["verdict"] == "diverged", "config"].tolist()
    if diverged:
        notes.append(f"Diverged (not eligible to win): {', '.join(diverged)}.")
    return notes


def trouble_notes(rows: pd.DataFrame, limit: int = 10) -> list[str]:
    """One line per failed, killed, running or missing trial (the first `limit`)."""
    trouble = rows[~rows.apply(outcome, axis=1).isin(["finished", "diverged"])]
    lines = []
    for _, row in trouble.head(limit).iterrows():
        reason = {"MISSING": "planned, but no run exists"}.get(row["status"], row["error"] or "")
        lines.append(f"{row['status']} trial {row['run_name']}" + (f": {reason}" if reason
                                                                    else ""))
    if len(trouble) > limit:
        lines.append(f"... and {len(trouble) - limit} more such trials (see summary.csv).")
    return lines
