"""The report's statistics: seeds pooled per configuration, a 95% interval on each accuracy,
and a paired test of every configuration against the winner by validation accuracy.

Intervals: one seed -> the Wilson score interval of an accuracy measured on N images; several
seeds -> mean ± t-interval over the seeds (the spread of the seeds on this one validation set),
never narrower than the Wilson interval of the mean accuracy on the validation images.

Tests against the winner (two-sided, ALPHA = 0.05; "within noise" means the test does not reject):
one seed per configuration -> the exact McNemar test on the shared validation images (a binomial
test on the images exactly one of the two got right); several seeds -> a paired t-test of the
validation accuracies over the seeds both ran. Without the data for a test the verdict is "noise
unknown": an interval overlap is never used as a test.

Pure functions over numbers and DataFrames: no MLflow, no files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from pipeline.report.runs import CONFIG_PARAMS

ALPHA = 0.05
LEVEL = 0.95
INTERVALS = {"val/acc": "n_val", "test/acc": "n_test"}  # accuracies that get a 95% interval
OUTCOMES = ("finished", "stopped", "diverged", "failed", "killed", "running", "missing")
MCNEMAR = "exact McNemar"
PAIRED_T = "paired t over seeds"


def varying_params(rows: pd.DataFrame) -> list[str]:
    """The config params that take more than one value among `rows` (the seed aside)."""
    return [k for k in CONFIG_PARAMS if k in rows and rows[k].nunique(dropna=False) > 1]


def outcome(row: pd.Series) -> str:
    """finished, stopped (early, by the scheduler), diverged, failed, killed, running or missing."""
    if row["status"] == "FINISHED":
        if row["diverged"]:
            return "diverged"
        return "stopped" if _flag(row.get("stopped_early")) else "finished"
    return str(row["status"]).lower()


def _flag(value: Any) -> bool:
    return bool(value) if value is not None and not pd.isna(value) else False


# --------------------------------------------------------------------------- intervals
def wilson_interval(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a proportion `successes / n` (NaN, NaN for n = 0)."""
    if n <= 0:
        return math.nan, math.nan
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """mean ± t * s / sqrt(n) over at least two values, clipped to [0, 1] (an accuracy)."""
    data = np.asarray(values, dtype=float)
    n = len(data)
    if n < 2:
        return math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * data.std(ddof=1) / math.sqrt(n))
    mean = float(data.mean())
    return max(0.0, mean - half), min(1.0, mean + half)


def accuracy_interval(values: Sequence[float], set_size: int | None) -> tuple[float, float]:
    """95% interval of an accuracy: Wilson on `set_size` images for one seed; for several, the
    t-interval over the seeds widened, where narrower, to the Wilson interval of their mean.

    Why the hull: the t-interval measures how much the seed moves the accuracy, not the finite
    validation set; seeds that all land on the same images (a collapsed model predicting one
    class every time) have no spread, and a t-interval of width 0 would claim certainty."""
    data = np.asarray(values, dtype=float)
    data = data[np.isfinite(data)]
    if len(data) == 0:
        return math.nan, math.nan
    wilson = (wilson_interval(round(float(data.mean()) * set_size), set_size) if set_size
              else (math.nan, math.nan))
    if len(data) == 1:
        return wilson
    low, high = t_interval(data)
    if not set_size:
        return low, high
    return min(low, wilson[0]), max(high, wilson[1])


# --------------------------------------------------------------------------- paired tests
def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: binomial test of b successes in b + c at 1/2."""
    if b + c == 0:
        return 1.0  # no image tells the two apart
    return float(min(1.0, stats.binomtest(b, b + c, 0.5).pvalue))


def discordant(winner: np.ndarray, other: np.ndarray) -> tuple[int, int]:
    """(b, c): images only `other` got right, and images only `winner` got right."""
    return int(np.sum(other & ~winner)), int(np.sum(winner & ~other))


def paired_t(first: Sequence[float], second: Sequence[float]) -> float:
    """Two-sided p-value of a paired t-test (at least two pairs; identical differences have no
    spread, so the t statistic is undefined: NaN)."""
    diffs = np.asarray(first, dtype=float) - np.asarray(second, dtype=float)
    if len(diffs) < 2 or np.ptp(diffs) <= 1e-12:
        return math.nan
    return float(stats.ttest_rel(first, second).pvalue)


@dataclass(frozen=True)
class Samples:
    """A configuration's finished trials, by seed: validation accuracy and, where the trial
    logged it, which validation images it got right (`val_correct.npy`)."""

    val_acc: Mapping[int, float]
    correct: Mapping[int, np.ndarray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """How many seeds."""
        return len(self.val_acc)


@dataclass(frozen=True)
class Comparison:
    """A configuration against the winner: the test that ran (or why none could), its p-value."""

    test: str
    p: float = math.nan
    detail: str = ""

    @property
    def verdict(self) -> str:
        """within noise (no rejection at ALPHA), below (rejected), or noise unknown."""
        if math.isnan(self.p):
            return "noise unknown"
        return "within noise" if self.p >= ALPHA else "below"


def compare(winner: Samples, other: Samples) -> Comparison:
    """The paired test of `other` against `winner` on validation accuracy."""
    if winner.n == 1 and other.n == 1:
        return _mcnemar(winner, other, next(iter(winner.val_acc)), next(iter(other.val_acc)))
    common = sorted(set(winner.val_acc) & set(other.val_acc))
    if len(common) < 2:
        return Comparison(f"none: {len(common)} common seed{'s' * (len(common) != 1)}, a "
                          "paired test over seeds needs 2")
    first = [winner.val_acc[s] for s in common]
    second = [other.val_acc[s] for s in common]
    p = paired_t(first, second)
    if math.isnan(p):
        # The same difference on every seed: the seed adds no noise, the images still do.
        return _mcnemar(winner, other, common[0], common[0],
                        f"identical difference on all {len(common)} seeds")
    return Comparison(PAIRED_T, p, f"{len(common)} seeds")


def _mcnemar(winner: Samples, other: Samples, seed_w: int, seed_o: int, why: str = ""
             ) -> Comparison:
    right_w, right_o = winner.correct.get(seed_w), other.correct.get(seed_o)
    if right_w is None or right_o is None:
        return Comparison("none: no val_correct.npy")
    if right_w.shape != right_o.shape:
        return Comparison(f"none: val_correct.npy of {len(right_w)} and {len(right_o)} images")
    b, c = discordant(right_w, right_o)
    detail = f"b = {b}, c = {c}" + (f"; {why}" if why else "")
    return Comparison(MCNEMAR, mcnemar_exact(b, c), detail)


# --------------------------------------------------------------------------- per configuration
def config_stats(rows: pd.DataFrame, metrics: tuple[str, ...], sizes: Mapping[str, int | None]
                 ) -> pd.DataFrame:
    """One row per configuration of one study: counts, mean/std and 95% interval per metric.

    A cell pools the finished trials; a configuration none of whose trials finished shows its
    early-stopped trials (values at the epoch they stopped); a diverged trial has no values.
    """
    records = []
    for label, group in rows.groupby("config", sort=False):
        outcomes = group.apply(outcome, axis=1)
        used = _used(group, outcomes)
        record: dict[str, Any] = {"config": label}
        record.update({k: group[k].iloc[0] for k in varying_params(rows)})
        record.update({"n": len(used), "trials": len(group), "status": status_text(group,
                                                                                   outcomes)})
        for metric in metrics:
            record.update(_metric_stats(used, metric, sizes.get(INTERVALS.get(metric, ""))))
        record.update(_flags(group, outcomes, used))
        constant, used_n = record["constant_predictions"], len(used)
        if constant:  # with several seeds, how many of them: one collapsed seed is not all
            record["status"] += (" (constant prediction)" if used_n == 1 else
                                 f" ({constant} of {used_n} constant predictions)")
        records.append(record)
    return pd.DataFrame(records)


def _used(group: pd.DataFrame, outcomes: pd.Series) -> pd.DataFrame:
    finished = group[outcomes == "finished"]
    return finished if not finished.empty else group[outcomes == "stopped"]


def _flags(group: pd.DataFrame, outcomes: pd.Series, used: pd.DataFrame) -> dict[str, Any]:
    """Eligibility to win and what keeps a configuration from it."""
    stopped = group.loc[outcomes == "stopped", "stopped_epoch"] if "stopped_epoch" in group else []
    constant = used["constant_prediction"] if "constant_prediction" in used else pd.Series([])
    return {
        "diverged_trials": int((outcomes == "diverged").sum()),
        "stopped_epoch": float(pd.Series(stopped, dtype=float).max()) if len(stopped) else np.nan,
        "constant_prediction": bool(constant.map(_flag).any()),
        "constant_predictions": int(constant.map(_flag).sum()),
        # A configuration with a diverged or early-stopped trial cannot win: its finished seeds
        # alone would be a sample the scheduler (or the divergence) chose.
        "eligible": bool((outcomes == "finished").any()) and not (
            outcomes.isin(["diverged", "stopped"]).any()),
    }


def status_text(group: pd.DataFrame, outcomes: pd.Series) -> str:
    """'2 finished, 1 stopped at epoch 3, 1 failed'."""
    counts = outcomes.value_counts()
    parts = []
    for name in OUTCOMES:
        if name not in counts:
            continue
        if name == "stopped":
            epochs = sorted({int(e) for e in group.loc[outcomes == name, "stopped_epoch"]
                             if pd.notna(e)})
            where = ", ".join(str(e) for e in epochs) or "?"
            parts.append(f"{counts[name]} stopped at epoch{'s' * (len(epochs) > 1)} {where}")
        else:
            parts.append(f"{counts[name]} {name}")
    return ", ".join(parts)


def _metric_stats(used: pd.DataFrame, metric: str, set_size: int | None) -> dict[str, float]:
    values = used[metric].to_numpy(dtype=float) if metric in used else np.array([])
    values = values[np.isfinite(values)]
    out = {metric: float(values.mean()) if len(values) else np.nan,
           f"{metric}_std": float(values.std(ddof=1)) if len(values) > 1 else np.nan}
    if metric in INTERVALS:
        out[f"{metric}_lo"], out[f"{metric}_hi"] = accuracy_interval(values, set_size)
    return out


def config_samples(rows: pd.DataFrame, correct: Mapping[str, np.ndarray]
                   ) -> dict[str, Samples]:
    """Per configuration, its finished trials by seed (for the paired tests)."""
    samples = {}
    for label, group in rows.groupby("config", sort=False):
        done = group[group.apply(outcome, axis=1) == "finished"]
        done = done[np.isfinite(done["val/acc"].to_numpy(dtype=float))]
        samples[str(label)] = Samples(
            {int(r["seed"]): float(r["val/acc"]) for _, r in done.iterrows()},
            {int(r["seed"]): correct[r["run_id"]] for _, r in done.iterrows()
             if r["run_id"] in correct})
    return samples


def add_verdicts(table: pd.DataFrame, samples: Mapping[str, Samples]) -> pd.DataFrame:
    """`verdict`, `p_vs_winner` and `test_vs_winner` per row. The winner has the best mean val
    acc among eligible rows; every other eligible row is 'within noise' or 'below' by a paired
    test, or 'noise unknown'; the rest are 'diverged', 'stopped at epoch k' or 'no result'."""
    table = table.copy()
    table["verdict"] = [_ineligible_verdict(row) for _, row in table.iterrows()]
    table["p_vs_winner"], table["test_vs_winner"], table["test_detail"] = np.nan, "", ""
    candidates = table.index[table["eligible"].astype(bool) & table["val/acc"].notna()]
    if candidates.empty:
        return table
    best = table.loc[candidates, "val/acc"].idxmax()
    winner = samples[str(table.at[best, "config"])]
    for index in candidates.drop(best):
        result = compare(winner, samples[str(table.at[index, "config"])])
        table.loc[index, ["verdict", "p_vs_winner", "test_vs_winner", "test_detail"]] = [
            result.verdict, result.p, result.test, result.detail]
    table.at[best, "verdict"] = "winner"
    return table


def _ineligible_verdict(row: pd.Series) -> str:
    if row.get("diverged_trials", 0):
        return "diverged"
    if pd.notna(row.get("stopped_epoch", np.nan)):
        return f"stopped at epoch {int(row['stopped_epoch'])}"
    return "no result"
