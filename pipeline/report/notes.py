"""What the report says in words about a table: its caption (how many seeds, which interval,
which test) and the notes under it (the winner, who is within noise of it, what went wrong).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from pipeline.report.stats import ALPHA, MCNEMAR, PAIRED_T, outcome

TEST_NAMES = {MCNEMAR: "exact McNemar test on the shared validation images (two-sided binomial "
                       "test on the images only one of the two got right)",
              PAIRED_T: "paired t-test of validation accuracy over the seeds both ran "
                        "(two-sided)"}


def digits(metric: str) -> int:
    """Decimals shown for a metric: times to 0.1 s, everything else to 4 places."""
    return 1 if metric == "train_time_s" else 4


def measured(row: pd.Series, metric: str) -> str:
    """'0.8246 ± 0.0021' (mean ± std over seeds), '0.8246' for one seed, 'diverged' for a
    configuration whose every trial diverged, '—' when nothing was measured."""
    value, std = row.get(metric, np.nan), row.get(f"{metric}_std", np.nan)
    if pd.isna(value):
        return "diverged" if row.get("diverged_trials", 0) and not row.get("n", 0) else "—"
    places = digits(metric)
    return f"{value:.{places}f}" + (f" ± {std:.{places}f}" if pd.notna(std) else "")


def interval(row: pd.Series, metric: str) -> str:
    """'[0.6342, 0.6927]' or '—'."""
    low, high = row.get(f"{metric}_lo", np.nan), row.get(f"{metric}_hi", np.nan)
    return "—" if pd.isna(low) or pd.isna(high) else f"[{low:.4f}, {high:.4f}]"


def seeds_text(table: pd.DataFrame) -> str:
    """'n = 3 seeds per configuration (lr=1.0: none finished)'."""
    counts = table["n"].astype(int)
    shown = counts[counts > 0]
    if shown.empty:
        return "no configuration has a finished trial"
    low, high = int(shown.min()), int(shown.max())
    span = f"{low}" if low == high else f"{low}–{high}"
    per = "row" if "setting" in table else "configuration"
    text = f"n = {span} seed{'s' * (high > 1)} per {per}"
    empty = table.loc[counts == 0, "config"].astype(str).tolist()
    return text + (f" ({', '.join(empty)}: none finished)" if empty else "")


def table_caption(table: pd.DataFrame, sizes: Mapping[str, int | None]) -> str:
    """The seeds behind the cells, the interval and the paired test the table used."""
    counts = table["n"].astype(int)
    parts = [seeds_text(table) + "."]
    if (counts > 1).any():
        parts.append("Cells: mean ± std over the seeds.")
    kinds = []
    if (counts == 1).any():
        kinds.append(f"Wilson score interval on the {sizes.get('n_val') or '?'} validation "
                     "images (one seed)")
    if (counts > 1).any():
        kinds.append("mean ± t-interval over the seeds, widened to the Wilson interval of the "
                     "mean where that is wider (several seeds)")
    parts.append(f"val acc 95% CI: {'; '.join(kinds)}.")
    used = [t for t in (MCNEMAR, PAIRED_T) if (table["test_vs_winner"] == t).any()]
    if used:
        parts.append(f"p vs winner: {'; '.join(TEST_NAMES[t] for t in used)}; α = {ALPHA}.")
    return " ".join(parts)


def winner_notes(table: pd.DataFrame, sizes: Mapping[str, int | None]) -> list[str]:
    """What a reader should take from a table: the winner, who is within noise of it, and
    what keeps the other rows from winning."""
    winner = table[table["verdict"] == "winner"]
    if winner.empty:
        return ["No winner: no configuration has a finished trial that neither diverged nor "
                "was stopped early."]
    best = winner.iloc[0]
    notes = [f"Winner by validation accuracy: {best['config']} (val acc "
             f"{measured(best, 'val/acc')}, test acc {measured(best, 'test/acc')}, "
             f"n = {best['n']})."]
    notes += _test_notes(table)
    eligible = table[table["eligible"].astype(bool) & table["test/acc"].notna()]
    by_test = eligible.loc[eligible["test/acc"].idxmax()] if not eligible.empty else best
    if by_test["config"] != best["config"]:
        notes.append(f"Test accuracy alone would have picked {by_test['config']} "
                     f"({measured(by_test, 'test/acc')}); the choice uses validation accuracy "
                     "only, so the test set stays an unbiased check.")
    if pd.notna(best.get("test/acc_lo")):
        how = (f"Wilson, {sizes.get('n_test') or '?'} test images" if best["n"] == 1
               else f"t-interval over {best['n']} seeds, at least Wilson's")
        notes.append(f"The winner's test accuracy {best['test/acc']:.4f} has the 95% interval "
                     f"{interval(best, 'test/acc')} ({how}).")
    return notes + _ineligible_notes(table)


def _test_notes(table: pd.DataFrame) -> list[str]:
    """Who is within noise of the winner, who is below it, whose noise is unknown."""
    def listed(verdict: str, with_p: bool = True) -> str:
        rows = table[table["verdict"] == verdict]
        return ", ".join(f"{r['config']} ({_p_text(r)})" if with_p else
                         f"{r['config']} ({r['test_vs_winner']})" for _, r in rows.iterrows())

    notes = []
    if (table["verdict"] == "within noise").any():
        notes.append(f"Within noise of the winner (the paired test does not reject at α = "
                     f"{ALPHA}): {listed('within noise')}: this sweep cannot tell them apart.")
    if (table["verdict"] == "below").any():
        notes.append(f"Below the winner (the paired test rejects at α = {ALPHA}): "
                     f"{listed('below')}.")
    if (table["verdict"] == "noise unknown").any():
        notes.append(f"Noise unknown (no paired test possible): {listed('noise unknown', False)}.")
    return notes


def _p_text(row: pd.Series) -> str:
    detail = f"; {row['test_detail']}" if row.get("test_detail") else ""
    shown = p_value(row["p_vs_winner"])
    return f"p {shown if shown.startswith('<') else '= ' + shown}, {row['test_vs_winner']}{detail}"


def p_value(p: float) -> str:
    """'0.125', '0.0033', '< 0.0001' or '—'."""
    if pd.isna(p):
        return "—"
    return "< 0.0001" if p < 1e-4 else f"{p:.3g}"


def _ineligible_notes(table: pd.DataFrame) -> list[str]:
    notes = []
    diverged = table.loc[table["verdict"] == "diverged", "config"].tolist()
    if diverged:
        notes.append(f"Diverged (not eligible to win; a diverged trial's accuracies are not "
                     f"results: its weights became NaN): {', '.join(map(str, diverged))}.")
    stopped = table[table["verdict"].str.startswith("stopped")]
    if not stopped.empty:
        notes.append("Stopped early by the scheduler (never a winner; values are those of the "
                     "epoch it stopped at): " + ", ".join(
                         f"{r['config']} ({r['verdict']})" for _, r in stopped.iterrows()) + ".")
    constant = [f"{r['config']}" + (f" ({r['constant_predictions']} of {r['n']} seeds)"
                                    if r.get("n", 1) > 1 else "")
                for _, r in table[table["constant_prediction"].astype(bool)].iterrows()]
    if constant:
        notes.append("Constant prediction (one class for every test image, per "
                     f"confusion_matrix.csv): {', '.join(constant)}.")
    return notes


def trouble_notes(rows: pd.DataFrame, limit: int = 10) -> list[str]:
    """One line per failed, killed, running or missing trial (the first `limit`)."""
    trouble = rows[~rows.apply(outcome, axis=1).isin(["finished", "stopped", "diverged"])]
    lines = []
    for _, row in trouble.head(limit).iterrows():
        reason = {"MISSING": "planned, but no run exists"}.get(row["status"], row["error"] or "")
        lines.append(f"{row['status']} trial {row['run_name']}" + (f": {reason}" if reason
                                                                    else ""))
    if len(trouble) > limit:
        lines.append(f"... and {len(trouble) - limit} more such trials (see summary.csv).")
    return lines


def time_note(table: pd.DataFrame, ratio: str) -> list[str]:
    """Each configuration's training time as a ratio to the baseline batch's, here and
    published (seconds measured on the authors' machine do not compare with these)."""
    if not ratio or table[ratio].isna().all():
        return []
    base = ratio.removeprefix("time_ratio_vs_")
    parts = []
    for _, row in table[table[ratio].notna()].iterrows():
        text = f"{row['config']} {row[ratio]:.1f}x"
        if pd.notna(row.get(f"{ratio}_ref")):
            text += f" (published {row[f'{ratio}_ref']:.1f}x)"
        parts.append(text)
    return [f"Training time relative to batch {base}: {', '.join(parts)}. Only ratios compare "
            "with the published times, which come from the authors' machine."]
