"""The homework's tables from the tidy trial frame: one row per configuration (seeds pooled),
the winner by validation accuracy, a paired test of every other configuration against it, the
published numbers beside, and what to say under each.

A configuration is a study's trials that share every param except the seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import SHORT_NAMES
from pipeline.models import find_spec
from pipeline.models.spec import ACCURACIES, LOSS_ACCURACIES
from pipeline.report.notes import table_caption, time_note, trouble_notes, winner_notes
from pipeline.report.reference import PUBLISHED_N_TRAIN, match_reference, model_reference_notes
from pipeline.report.stats import (
    Samples,
    add_verdicts,
    config_samples,
    config_stats,
    varying_params,
)

OFF_WHEN_ZERO = ("l2_decay", "dropout")  # a regulariser at 0 is "off": left out of labels
BASELINE_BATCH = 1024  # the homework's Table 5 compares batch 16 with batch 1024
FIRST_FREE_NUMBER = 8  # the homework's tables are 1-7; the report's own come after


@dataclass(frozen=True)
class TableSpec:
    """How the homework shaped a study's table (number None: not one of the homework's)."""

    number: int | None
    title: str
    metrics: tuple[str, ...]
    config_header: str = "config"
    order: float = 100.0


SPECS = {
    "q1_perceptron": TableSpec(1, "Perceptron's final accuracies", ACCURACIES, order=1),
    "q1_logreg": TableSpec(2, "Logistic regression final accuracies", ACCURACIES, "η", 2),
    # Not a table in the homework, which quotes the MLP's summed training loss in its text
    # (1.2.2) and its accuracies in Table 3.
    "q1_mlp": TableSpec(None, "Multi-layer perceptron (numpy): summed training loss and final "
                        "accuracies", ("train/loss_sum", *ACCURACIES), order=8),
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
    """One table of the report: its rows (one per configuration) and what to say about it."""

    name: str
    study: str | None
    metrics: tuple[str, ...]
    config_header: str
    data: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    order: float = 100.0
    number: int | None = None
    caption: str = ""
    columns: tuple[str, ...] = ()  # shown between the configuration and n
    samples: dict[str, Samples] = field(default_factory=dict)  # per row, for paired tests
    stem: str = ""  # file name part; the study's name by default

    @property
    def key(self) -> str:
        """The table's CSV name (without .csv), e.g. 'table6_q2_lr'."""
        return f"table{self.number}_{self.stem or self.study}"

    @property
    def has_reference(self) -> bool:
        """Whether any row has a published counterpart."""
        return "ref_config" in self.data and bool(self.data["ref_config"].astype(bool).any())

    @property
    def time_ratio(self) -> str:
        """The column of training time relative to the baseline batch, or ''."""
        return next((c for c in self.data if c.startswith("time_ratio_vs_")
                     and not c.endswith("_ref")), "")

    @property
    def title(self) -> str:
        """'Table 6: Learning rate influence ...'."""
        return f"Table {self.number}: {self.name}"


def number_tables(tables: list[ReportTable]) -> list[ReportTable]:
    """Sorted by order; the homework's keep their numbers, the others get 8, 9, ..."""
    tables = sorted(tables, key=lambda t: t.order)
    taken = {t.number for t in tables if t.number is not None}
    free = (n for n in range(FIRST_FREE_NUMBER, 10_000) if n not in taken)
    for table in tables:
        if table.number is None:
            table.number = next(free)
    return tables


def table_metrics(model: str) -> tuple[str, ...]:
    """The metrics a study of `model` shows: its spec's (train loss for a model that has left
    the registry)."""
    spec = find_spec(model)
    return spec.table_metrics if spec is not None else LOSS_ACCURACIES


def spec_for(study: str, frame: pd.DataFrame) -> TableSpec:
    """The homework's shape for a known study, a generic one otherwise; time when batch varies."""
    rows = frame[frame["study"] == study]
    spec = SPECS.get(study)
    if spec is None:
        spec = TableSpec(None, "Configurations compared",  # the renderers name the study
                         table_metrics(str(rows["model"].iloc[0])))
    if "batch_size" in varying_params(rows) and "train_time_s" not in spec.metrics:
        spec = TableSpec(spec.number, spec.title, (*spec.metrics, "train_time_s"),
                         spec.config_header, spec.order)
    return spec


def label_configs(frame: pd.DataFrame) -> pd.Series:
    """A short label per trial naming its configuration within its study, e.g. 'lr=0.1'."""
    labels = pd.Series("", index=frame.index, dtype=object)
    for _, rows in frame.groupby("study", sort=False):
        keys = varying_params(rows)
        for index, row in rows.iterrows():
            parts = [f"{SHORT_NAMES.get(k, k)}={_text(row[k])}" for k in keys
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
        if metric != "train_time_s":  # seconds on another machine: only a ratio compares
            table[f"{metric}_diff"] = table[metric] - table[f"{metric}_ref"]
    table["ref_config"] = configs
    notes = [f"{', '.join(labels)}: {note}." for note, labels in by_note.items()]
    return table, notes


def add_time_ratio(table: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """`time_ratio_vs_<b>` (training time over the batch-<b> row's, b = 1024 where it ran, else
    the largest batch) measured and published (`..._ref`); the published seconds are dropped."""
    table = table.copy()
    published = table.pop("train_time_s_ref") if "train_time_s_ref" in table else None
    if "batch_size" not in table or table["batch_size"].isna().all():
        return table, ""
    batch = BASELINE_BATCH if (table["batch_size"] == BASELINE_BATCH).any() else int(
        table["batch_size"].max())
    base = table.index[table["batch_size"] == batch][0]
    column = f"time_ratio_vs_{batch}"
    # A row that stopped early or diverged ran fewer epochs: its total time does not compare.
    complete = (table["diverged_trials"] == 0) & table["stopped_epoch"].isna()
    complete &= bool(complete.at[base])  # nor does anything against a cut-short baseline
    table[column] = (table["train_time_s"] / table.at[base, "train_time_s"]).where(complete)
    if published is not None:
        table[f"{column}_ref"] = published / published.at[base]
    return table, column


def summed_loss(table: pd.DataFrame, n_train: int | None) -> tuple[pd.DataFrame, list[str]]:
    """What the summed training loss means, and no Δ against the published sum unless both
    summed over the same number of training images (a sum grows with the images)."""
    notes = [f"train loss (sum): the cross-entropy summed over the epoch's {n_train or '?'} "
             "training images (the homework's \"total train loss\")."]
    if n_train != PUBLISHED_N_TRAIN and "train/loss_sum_diff" in table:
        table = table.assign(**{"train/loss_sum_diff": np.nan})
        notes.append(f"No Δ for it: the published sum is over {PUBLISHED_N_TRAIN:,} training "
                     f"images, these runs summed over {n_train or 'an unknown number of'}.")
    return table, notes


def build_tables(frame: pd.DataFrame, reference: pd.DataFrame | None,
                 sizes: Mapping[str, int | None], correct: Mapping[str, np.ndarray]
                 ) -> list[ReportTable]:
    """Every grid study's table, and Table 3 (the models compared) when its studies ran."""
    tables = [study_table(frame, study, reference, sizes, correct)
              for study in frame["study"].unique()]
    comparison = comparison_table(tables, sizes)
    return tables + ([comparison] if comparison is not None else [])


def study_table(frame: pd.DataFrame, study: str, reference: pd.DataFrame | None,
                sizes: Mapping[str, int | None], correct: Mapping[str, np.ndarray]
                ) -> ReportTable:
    """One study's configurations with seeds pooled, verdicts and published numbers."""
    rows = frame[frame["study"] == study]
    spec = spec_for(study, frame)
    samples = config_samples(rows, correct)
    table = add_verdicts(config_stats(rows, spec.metrics, sizes), samples)
    table, reference_notes = attach_reference(table, rows, reference, spec.metrics)
    notes = winner_notes(table, sizes) + trouble_notes(rows) + reference_notes
    notes += model_reference_notes(str(rows["model"].iloc[0]))
    if "train_time_s" in spec.metrics:
        table, ratio = add_time_ratio(table)
        notes += time_note(table, ratio)
    if "train/loss_sum" in spec.metrics:
        table, sum_notes = summed_loss(table, sizes.get("n_train"))
        notes += sum_notes
    return ReportTable(spec.title, study, spec.metrics, spec.config_header, table, notes,
                       spec.order, spec.number, table_caption(table, sizes), samples=samples)


def comparison_table(tables: list[ReportTable], sizes: Mapping[str, int | None]
                     ) -> ReportTable | None:
    """Table 3: each model's winning configuration side by side (None without two models)."""
    by_study = {t.study: t for t in tables}
    records, samples = [], {}
    for model, study in COMPARED:
        if study not in by_study:
            continue
        data = by_study[study].data
        winner = data[data["verdict"] == "winner"]
        row = (winner if not winner.empty else data.head(1)).iloc[0]
        keep = [c for c in row.index if c.split("_")[0] in ACCURACIES or c in
                ("n", "trials", "status", "eligible", "ref_config", "diverged_trials",
                 "stopped_epoch", "constant_prediction", "constant_predictions")]
        records.append({"config": model, "setting": row["config"], **row[keep].to_dict()})
        samples[model] = by_study[study].samples[str(row["config"])]
    if len(records) < 2:
        return None
    table = add_verdicts(pd.DataFrame(records), samples)
    notes = ["Each model's row is its study's winner by validation accuracy.",
             *winner_notes(table, sizes)]
    spec = COMPARISON
    return ReportTable(spec.title, None, spec.metrics, spec.config_header, table, notes,
                       spec.order, spec.number, table_caption(table, sizes), ("setting",),
                       samples, "models")
