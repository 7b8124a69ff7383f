"""The report's statistics pinned to exact values: Wilson intervals, the exact McNemar test, the
paired t-test over seeds, and what a diverged, early-stopped or seed-poor configuration gets.
Fast: plain DataFrames, no MLflow."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipeline.errors import UserError
from pipeline.report.runs import SweepInfo
from pipeline.report.stats import (
    MCNEMAR,
    PAIRED_T,
    Samples,
    accuracy_interval,
    add_verdicts,
    compare,
    config_samples,
    config_stats,
    discordant,
    mcnemar_exact,
    outcome,
    paired_t,
    t_interval,
    wilson_interval,
)
from pipeline.report.summary import blank_diverged, summary_frame
from pipeline.report.tables import add_time_ratio

pytestmark = pytest.mark.fast  # no Ray, no MLflow: `make test-fast`

Z = 1.959963984540054  # the normal's 97.5% quantile


def test_wilson_at_zero_and_at_one() -> None:
    low, high = wilson_interval(0, 109)
    assert low == 0.0
    assert high == pytest.approx(Z * Z / (109 + Z * Z), rel=1e-12)
    assert high == pytest.approx(0.034043, abs=1e-6)
    low, high = wilson_interval(109, 109)
    assert high == 1.0
    assert low == pytest.approx(109 / (109 + Z * Z), rel=1e-12)
    assert low == pytest.approx(0.965957, abs=1e-6)


def test_wilson_in_the_middle_matches_the_formula() -> None:
    n, k = 1000, 664
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z / (1 + Z * Z / n) * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    assert wilson_interval(k, n) == pytest.approx((centre - half, centre + half), rel=1e-12)
    # The bounds are the roots of (p_hat - p)^2 = z^2 p (1 - p) / n, solved independently.
    roots = sorted(np.roots([1 + Z * Z / n, -(2 * p + Z * Z / n), p * p]).real)
    assert wilson_interval(k, n) == pytest.approx(tuple(roots), rel=1e-12)
    assert wilson_interval(k, n) == pytest.approx((0.634146, 0.692598), abs=1e-6)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_one_seed_gets_wilson_several_seeds_a_t_interval() -> None:
    assert accuracy_interval([0.664], 1000) == pytest.approx(wilson_interval(664, 1000))
    assert all(math.isnan(v) for v in accuracy_interval([0.664], None))  # N unknown
    values = [0.80, 0.81, 0.82]
    half = stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / math.sqrt(3)  # 0.02484
    t_only = (0.81 - half, 0.81 + half)
    assert accuracy_interval(values, None) == pytest.approx(t_only)
    # On 100 images Wilson at 81/100 ([0.7222, 0.8749]) is wider than the seeds' spread.
    assert accuracy_interval(values, 100) == pytest.approx(wilson_interval(81, 100))
    # On 10,000 images the seeds' spread is the wider: the t-interval stands.
    assert accuracy_interval(values, 10_000) == pytest.approx(t_only)
    # Three seeds that collapsed to the same prediction: no spread, never a width-0 interval.
    low, high = accuracy_interval([0.4721] * 3, 10_832)
    assert (low, high) == pytest.approx(wilson_interval(5114, 10_832)) and high - low > 0.018
    assert t_interval([0.99, 1.0, 1.0])[1] == 1.0  # clipped: an accuracy is at most 1


@pytest.mark.parametrize("b, c", [(0, 4), (4, 0), (1, 9), (3, 3), (10, 2), (0, 1), (17, 40)])
def test_exact_mcnemar_is_the_two_sided_binomial_test(b: int, c: int) -> None:
    assert mcnemar_exact(b, c) == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue,
                                                rel=1e-12)


def test_exact_mcnemar_pinned_values() -> None:
    assert mcnemar_exact(0, 0) == 1.0  # no image tells the two apart
    assert mcnemar_exact(0, 4) == pytest.approx(0.125)  # 2 * 0.5**4
    assert mcnemar_exact(3, 3) == 1.0


def test_the_issues_example_109_of_109_against_105_of_109() -> None:
    winner = np.ones(109, dtype=bool)
    other = winner.copy()
    other[:4] = False
    assert discordant(winner, other) == (0, 4)
    result = compare(Samples({1: 1.0}, {1: winner}), Samples({1: 105 / 109}, {1: other}))
    assert (result.test, result.detail) == (MCNEMAR, "b = 0, c = 4")
    assert result.p == pytest.approx(0.125)
    assert result.verdict == "within noise"  # 4 images on 109 is noise at alpha = 0.05


def test_a_large_discordance_is_below() -> None:
    winner = np.arange(1000) < 800
    other = winner.copy()
    other[700:800] = False
    result = compare(Samples({7: 0.8}, {7: winner}), Samples({3: 0.7}, {3: other}))
    assert result.test == MCNEMAR and result.p < 1e-20 and result.verdict == "below"


def test_paired_t_over_seeds_matches_scipy() -> None:
    first, second = [0.80, 0.81, 0.82, 0.79], [0.70, 0.72, 0.71, 0.73]
    assert paired_t(first, second) == pytest.approx(stats.ttest_rel(first, second).pvalue,
                                                    rel=1e-12)
    winner = Samples(dict(zip([1, 2, 3, 4], first, strict=True)))
    other = Samples(dict(zip([1, 2, 3, 4], second, strict=True)))
    result = compare(winner, other)
    assert result.test == PAIRED_T and result.detail == "4 seeds"
    assert result.p == pytest.approx(stats.ttest_rel(first, second).pvalue)


def test_paired_t_pairs_by_seed_and_uses_only_common_seeds() -> None:
    winner = Samples({1: 0.80, 2: 0.83, 3: 0.81, 9: 0.99})
    other = Samples({3: 0.78, 1: 0.79, 2: 0.80, 5: 0.10})
    result = compare(winner, other)
    assert result.p == pytest.approx(stats.ttest_rel([0.80, 0.83, 0.81],
                                                     [0.79, 0.80, 0.78]).pvalue)


def test_fewer_than_two_common_seeds_is_not_available() -> None:
    winner = Samples({1: 0.8, 2: 0.81, 3: 0.82}, {})
    for other in (Samples({1: 0.7}), Samples({4: 0.7, 5: 0.71})):
        result = compare(winner, other)
        assert math.isnan(result.p) and result.verdict == "noise unknown"
        assert result.test.startswith("none:") and "needs 2" in result.test


def test_no_val_correct_is_noise_unknown_never_a_guess() -> None:
    result = compare(Samples({1: 0.9}, {1: np.ones(10, bool)}), Samples({1: 0.1}))
    assert math.isnan(result.p) and result.verdict == "noise unknown"
    assert result.test == "none: no val_correct.npy"


def test_identical_differences_over_seeds_fall_back_to_mcnemar() -> None:
    right = np.arange(100) < 80
    worse = right.copy()
    worse[:2] = False
    winner = Samples({1: 0.8, 2: 0.8}, {1: right, 2: right})
    other = Samples({1: 0.78, 2: 0.78}, {1: worse, 2: worse})
    result = compare(winner, other)
    assert result.test == MCNEMAR and result.p == pytest.approx(0.5)
    assert "identical difference on all 2 seeds" in result.detail


def trials(rows: list[dict]) -> pd.DataFrame:
    """A trial frame as the reader builds it (only the columns the statistics use)."""
    base = {"study": "s", "status": "FINISHED", "diverged": False, "stopped_early": False,
            "stopped_epoch": np.nan, "constant_prediction": False, "test/acc": 0.5}
    frame = pd.DataFrame([{**base, **row} for row in rows])
    return blank_diverged(frame)


def test_a_diverged_trials_row() -> None:
    frame = trials([
        {"config": "lr=1.0", "seed": 1, "run_id": "d", "val/acc": 0.9, "test/acc": 0.25,
         "diverged": True},
        {"config": "lr=0.1", "seed": 1, "run_id": "a", "val/acc": 0.8},
        {"config": "lr=0.01", "seed": 1, "run_id": "b", "val/acc": 0.7},
    ])
    right = {"a": np.arange(10) < 8, "b": np.arange(10) < 7}
    table = add_verdicts(config_stats(frame, ("val/acc", "test/acc"), {"n_val": 10}),
                         config_samples(frame, right)).set_index("config")
    row = table.loc["lr=1.0"]
    assert row["n"] == 0 and row["status"] == "1 diverged" and row["verdict"] == "diverged"
    assert math.isnan(row["val/acc"]) and math.isnan(row["test/acc"])  # NaN weights' numbers
    assert math.isnan(row["val/acc_lo"]) and math.isnan(row["p_vs_winner"])
    assert not row["eligible"]
    assert table.loc["lr=0.1", "verdict"] == "winner"
    assert table.loc["lr=0.01", "p_vs_winner"] == pytest.approx(mcnemar_exact(0, 1))


def test_an_early_stopped_trial_is_shown_but_never_wins() -> None:
    frame = trials([
        {"config": "a", "seed": 1, "run_id": "a", "val/acc": 0.95, "stopped_early": True,
         "stopped_epoch": 4},
        {"config": "b", "seed": 1, "run_id": "b", "val/acc": 0.80},
    ])
    assert list(frame.apply(outcome, axis=1)) == ["stopped", "finished"]
    table = add_verdicts(config_stats(frame, ("val/acc",), {"n_val": 100}),
                         config_samples(frame, {})).set_index("config")
    assert table.loc["a", "verdict"] == "stopped at epoch 4"
    assert table.loc["a", "status"] == "1 stopped at epoch 4"
    assert table.loc["a", "val/acc"] == pytest.approx(0.95) and table.loc["a", "n"] == 1
    assert table.loc["b", "verdict"] == "winner"


def test_a_constant_prediction_is_in_the_status() -> None:
    frame = trials([{"config": "a", "seed": 1, "run_id": "a", "val/acc": 0.47,
                     "constant_prediction": True}])
    table = config_stats(frame, ("val/acc",), {"n_val": 100})
    assert table.loc[0, "status"] == "1 finished (constant prediction)"


# What the homework's models ignore (their specs in pipeline/models say it; written out here).
NOT_APPLICABLE = {
    "numpy_perceptron": ("batch_size", "hidden_size", "layers", "activation", "dropout",
                         "l2_decay", "optimizer"),
    "numpy_logreg": ("batch_size", "hidden_size", "layers", "activation", "dropout", "l2_decay",
                     "optimizer"),
    "numpy_mlp": ("batch_size", "layers", "dropout", "l2_decay", "optimizer"),
    "torch_logreg": ("hidden_size", "layers", "activation", "dropout"),
    "torch_ffn": (),
}


def test_params_that_do_not_apply_are_empty_in_the_summary() -> None:
    frame = pd.DataFrame([
        {"model": m, "seed": 1, "epochs": 3, "learning_rate": 0.1, "batch_size": 16,
         "hidden_size": 200, "layers": 1, "activation": "relu", "dropout": 0.0,
         "l2_decay": 0.0, "optimizer": "sgd"} for m in NOT_APPLICABLE])
    summary = summary_frame(frame).set_index("model")
    for model, params in NOT_APPLICABLE.items():
        for param in ("batch_size", "hidden_size", "layers", "activation", "dropout",
                      "l2_decay", "optimizer"):
            assert pd.isna(summary.loc[model, param]) == (param in params), (model, param)
    assert summary.loc["numpy_mlp", "hidden_size"] == 200
    assert summary.loc["torch_logreg", "batch_size"] == 16


def test_time_is_a_ratio_to_the_batch_1024_run() -> None:
    table = pd.DataFrame({"config": ["batch=16", "batch=1024"], "batch_size": [16, 1024],
                          "train_time_s": [6.0, 1.5], "train_time_s_ref": [159.0, 15.0],
                          "diverged_trials": [0, 0], "stopped_epoch": [np.nan, np.nan]})
    table, column = add_time_ratio(table)
    assert column == "time_ratio_vs_1024" and "train_time_s_ref" not in table
    assert list(table[column]) == pytest.approx([4.0, 1.0])
    assert list(table[f"{column}_ref"]) == pytest.approx([10.6, 1.0])


def test_no_time_ratio_for_runs_cut_short() -> None:
    table = pd.DataFrame({"config": ["batch=16", "batch=64", "batch=1024"],
                          "batch_size": [16, 64, 1024], "train_time_s": [6.0, 2.0, 1.5],
                          "diverged_trials": [0, 0, 0], "stopped_epoch": [np.nan, 2, np.nan]})
    table, column = add_time_ratio(table)
    assert list(table[column].isna()) == [False, True, False]  # 2 of 3 epochs: no ratio
    table = pd.DataFrame({"config": ["batch=16", "batch=1024"], "batch_size": [16, 1024],
                          "train_time_s": [6.0, 1.0], "diverged_trials": [0, 1],
                          "stopped_epoch": [np.nan, np.nan]})
    table, column = add_time_ratio(table)
    assert table[column].isna().all()  # against a diverged baseline nothing compares


def sweep_with(tag: str | None) -> SweepInfo:
    """A sweep's parent run as the report sees it, with tag `medgrid.sampled` = `tag`."""
    tags = {} if tag is None else {"medgrid.sampled": tag}
    return SweepInfo("r", "s", "e", "1", "FINISHED", 0, "", tags, {})


def test_the_sampled_tag_is_read_and_checked() -> None:
    assert sweep_with(None).sampled == {}
    kinds = {"learning_rate": "loguniform", "dropout": "uniform", "batch_size": "grid"}
    assert sweep_with(json.dumps(kinds)).sampled == kinds
    for bad in ("not json", '["learning_rate"]', '{"learning_rate": "gaussian"}'):
        with pytest.raises(UserError, match="medgrid.sampled"):
            _ = sweep_with(bad).sampled


def test_one_collapsed_seed_of_three_is_counted_not_called_all() -> None:
    frame = trials([{"config": "a", "seed": s, "run_id": f"a{s}", "val/acc": acc,
                     "constant_prediction": s == 1} for s, acc in ((1, 0.47), (2, 0.7), (3, 0.72))])
    table = config_stats(frame, ("val/acc",), {"n_val": 100})
    assert table.loc[0, "status"] == "3 finished (1 of 3 constant predictions)"
    assert table.loc[0, "constant_predictions"] == 1 and bool(table.loc[0, "constant_prediction"])
