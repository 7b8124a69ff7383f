"""Seeds pooled per configuration: counts by outcome, mean, std and a 95% interval per metric,
and the verdict of each configuration against the winner by validation accuracy.

A configuration's 95% interval on an accuracy combines the spread over seeds (a t-interval) with
the sampling error of an accuracy measured on N images (binomial); with one seed only the second
is left. Two configurations whose intervals overlap are "within noise" of each other.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from pipeline.report_runs import CONFIG_PARAMS

INTERVALS = {"val/acc": "n_val", "test/acc": "n_test"}  # accuracies that get a 95% interval
OUTCOMES = ("finished", "diverged", "failed", "killed", "running", "missing")


def varying_params(rows: pd.DataFrame) -> list[str]:
    """The config params that take more than one value among `rows` (the seed aside)."""
    return [k for k in CONFIG_PARAMS if k in rows and rows[k].nunique(dropna=False) > 1]


def outcome(row: pd.Series) -> str:
    """finished, diverged, failed, killed, running or missing."""
    if row["status"] == "FINISHED":
        return "diverged" if row["diverged"] else "finished"
    return str(row["status"]).lower()


def config_stats(rows: pd.DataFrame, metrics: tuple[str, ...], sizes: dict[str, int | None]
                 ) -> pd.DataFrame:
    """One row per configuration of one study: counts, mean/std/95% interval per metric."""
    records = []
    for label, group in rows.groupby("config", sort=False):
        outcomes = group.apply(outcome, axis=1)
        counts = outcomes.value_counts()
        used = group[outcomes == "finished"]
        if used.empty:  # show what a diverged configuration reached, as the homework does
            used = group[outcomes == "diverged"]
        record: dict[str, Any] = {"config": label}
        record.update({k: group[k].iloc[0] for k in varying_params(rows)})
        record.update({"n": len(used), "trials": len(group),
                       "status": ", ".join(f"{counts[o]} {o}" for o in OUTCOMES if o in counts)})
        for metric in metrics:
            record.update(_metric_stats(used, metric, sizes.get(INTERVALS.get(metric, ""))))
        record["eligible"] = bool(counts.get("finished", 0)) and not counts.get("diverged", 0)
        records.append(record)
    return pd.DataFrame(records)


def _metric_stats(used: pd.DataFrame, metric: str, set_size: int | None) -> dict[str, float]:
    values = used[metric].to_numpy(dtype=float) if metric in used else np.array([])
    values = values[np.isfinite(values)]
    mean = float(values.mean()) if len(values) else np.nan
    std = float(values.std(ddof=1)) if len(values) > 1 else np.nan
    out = {metric: mean, f"{metric}_std": std}
    if metric in INTERVALS:
        out[f"{metric}_ci95"] = ci95(values, set_size)
    return out


def ci95(values: np.ndarray, set_size: int | None) -> float:
    """Half-width of a 95% interval on a mean accuracy: seed spread and binomial error of an
    accuracy on `set_size` images, combined; NaN when neither is known."""
    n = len(values)
    if n == 0:
        return np.nan
    seeds = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n) if n > 1 else 0.0
    p = float(values.mean())
    sampling = 1.96 * math.sqrt(p * (1 - p) / set_size) if set_size else 0.0
    if n == 1 and not set_size:
        return np.nan
    return float(math.hypot(seeds, sampling))


def add_verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """`verdict` per row: winner (best mean val acc among eligible rows), within noise (its
    95% interval overlaps the winner's), below, diverged, or no result."""
    table = table.copy()
    table["verdict"] = np.where((table["n"] > 0) & ~table["eligible"].astype(bool), "diverged",
                                "no result")
    candidates = table.index[table["eligible"].astype(bool) & table["val/acc"].notna()]
    if candidates.empty:
        return table
    best = table.loc[candidates, "val/acc"].idxmax()
    gap = (table["val/acc"] - table.at[best, "val/acc"]).abs()
    reach = table["val/acc_ci95"] + table.at[best, "val/acc_ci95"]
    table.loc[candidates, "verdict"] = np.select(
        [reach[candidates].isna(), gap[candidates] <= reach[candidates]],
        ["below (noise unknown)", "within noise"], "below")
    table.at[best, "verdict"] = "winner"
    return table
