"""`medgrid report` on runs built directly with the MLflow client: several seeds, a failed, a
diverged, an early-stopped and a missing trial, test accuracy that disagrees with validation
accuracy, `val_correct.npy` with known discordant counts for the paired tests, a trial that
predicts one class, and a second experiment holding a sampled sweep."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from scipy.stats import ttest_rel

from pipeline.cli import main
from pipeline.config import PlannedTrial, TrialConfig, expand, load_space, merge_identical
from pipeline.report.stats import wilson_interval
from pipeline.tracking import server as tracking_server
from pipeline.tracking.server import free_port

STUDIES = {
    "q1_perceptron.yaml": "name: q1_perceptron\nmodel: numpy_perceptron\nseeds: [1]\n"
                          "params: {epochs: 3, learning_rate: 1.0}\n",
    "q1_logreg.yaml": "name: q1_logreg\nmodel: numpy_logreg\nseeds: [1]\n"
                      "params: {epochs: 3, learning_rate: [0.01, 0.001]}\n",
    "q1_mlp.yaml": "name: q1_mlp\nmodel: numpy_mlp\nseeds: [1]\n"
                   "params: {epochs: 3, learning_rate: 0.001, hidden_size: 200}\n",
    "q2_batch.yaml": "name: q2_batch\nmodel: torch_ffn\nseeds: [1]\n"
                     "params: {epochs: 3, learning_rate: 0.1, batch_size: [16, 64, 1024]}\n",
    "q2_lr.yaml": "name: q2_lr\nmodel: torch_ffn\nseeds: [1, 2, 3]\n"
                  "params: {epochs: 3, batch_size: 16, learning_rate: [1.0, 0.1, 0.01]}\n",
    "sweep.yaml": "name: tiny\ninclude: [q1_perceptron.yaml, q1_logreg.yaml, q1_mlp.yaml, "
                  "q2_batch.yaml, q2_lr.yaml]\n",
}
N_VAL, N_TEST = 1000, 529
# Final (val/acc, test/acc) per trial name; by test accuracy lr=0.01 would win q2_lr, by
# validation accuracy lr=0.1 does. lr=1.0 seed=1 diverges with the best val/acc of all.
FINAL = {
    "q1_perceptron seed=1": (0.46, 0.35),
    "q1_logreg lr=0.01 seed=1": (0.660, 0.58),
    "q1_logreg lr=0.001 seed=1": (0.664, 0.59),  # 4 images apart on 1,000: noise
    "q1_mlp seed=1": (0.78, 0.74),
    "q2_batch batch=16 seed=1": (0.80, 0.75),
    "q2_batch batch=64 seed=1": (0.87, 0.90),  # stopped early at epoch 2, the best val/acc
    "q2_batch batch=1024 seed=1": (0.70, 0.72),
    "q2_lr lr=0.1 seed=1": (0.80, 0.70), "q2_lr lr=0.1 seed=2": (0.81, 0.71),
    "q2_lr lr=0.1 seed=3": (0.82, 0.72),
    "q2_lr lr=0.01 seed=1": (0.70, 0.80), "q2_lr lr=0.01 seed=2": (0.72, 0.81),
    "q2_lr lr=0.01 seed=3": (0.71, 0.82),
    "q2_lr lr=1.0 seed=1": (0.90, 0.25),
}
DIVERGED = "q2_lr lr=1.0 seed=1"
FAILED = "q2_lr lr=1.0 seed=2"
MISSING = "q2_lr lr=1.0 seed=3"
STOPPED = {"q2_batch batch=64 seed=1": 2}  # name: the last epoch it ran
CONSTANT = "q1_perceptron seed=1"  # predicts one class (its confusion matrix says so)
EPOCH_TIME = {"q2_batch batch=16 seed=1": 2.0, "q2_batch batch=64 seed=1": 1.0,
              "q2_batch batch=1024 seed=1": 0.5}
# val_correct.npy: (images the run got right, b, c against the winner named, or None)
# b: images only this run got right; c: images only the winner got right.
CORRECT = {
    "q1_logreg lr=0.001 seed=1": (664, 0, 0),
    "q1_logreg lr=0.01 seed=1": (660, 0, 4),  # the example: p = 0.125
    "q1_mlp seed=1": (780, 0, 0),  # against logistic regression's winner: b = 0, c = 116
    "q2_batch batch=16 seed=1": (800, 0, 0),
    "q2_batch batch=1024 seed=1": (700, 20, 120),
}


def correct_array(right: int, b: int, c: int, winner_right: int) -> np.ndarray:
    """A validation run's correctness with b, c discordant images against a winner that got
    the first `winner_right` images right."""
    values = np.arange(N_VAL) < winner_right
    values[winner_right - c:winner_right] = False
    values[winner_right:winner_right + b] = True
    assert values.sum() == right
    return values


def log_file(client: MlflowClient, run_id: str, tmp: Path, name: str, write) -> None:
    """Log one artifact file `name`, written by `write(path)`, at the run's artifact root."""
    folder = tmp / run_id
    folder.mkdir(parents=True, exist_ok=True)
    write(folder / name)
    client.log_artifact(run_id, str(folder / name))


def confusion(constant: bool) -> pd.DataFrame:
    """A test-set confusion matrix (rows true, columns predicted), as the trials log it."""
    names = ["CNV", "DME", "DRUSEN", "NORMAL"]
    counts = np.diag([182, 55, 42, 250]) if not constant else np.array(
        [[0, 0, 0, 182], [0, 0, 0, 55], [0, 0, 0, 42], [0, 0, 0, 250]])
    return pd.DataFrame(counts, index=pd.Index(names, name="true"), columns=names)


def epoch_metrics(name: str, config: TrialConfig, val: float) -> list[Metric]:
    """Per-epoch metrics of a trial; a diverged one has a NaN loss in its last epoch, an early-
    stopped one ends at its stopping epoch."""
    metrics = []
    for epoch in range(1, STOPPED.get(name, config.epochs) + 1):
        loss = math.nan if name == DIVERGED and epoch == config.epochs else 1.0 / epoch
        values = {"train/loss": loss, "train/loss_sum": loss * 100, "epoch_time_s":
                  EPOCH_TIME.get(name, 0.1)}
        if not math.isnan(loss):
            values.update({"train/acc": val + 0.01, "val/acc": val - 0.1 / epoch + 0.1 / 3,
                           "val/loss": 1.5 / epoch})
        metrics += [Metric(k, v, 0, epoch) for k, v in values.items()]
    return metrics


def log_trial(client: MlflowClient, experiment_id: str, parent: str, trial: PlannedTrial,
              tmp: Path) -> str:
    """A child run as `medgrid tune` writes it: tags, every config field as a param, 3 epochs,
    artifacts."""
    name, config = trial.name, trial.config
    run = client.create_run(experiment_id, run_name=name, tags={
        "mlflow.parentRunId": parent, "medgrid.kind": "trial", "study": config.study,
        "seed": str(config.seed), "node": "test", "medgrid.attempt": "1",
        **({"medgrid.also": json.dumps(trial.also)} if trial.also else {})})
    run_id = run.info.run_id
    params = [Param(k, str(v)) for k, v in config.model_dump().items()]
    params += [Param("dataset", "synthetic"), Param("test_split", "hw1")]
    val, test = FINAL.get(name, (0.5, 0.5))
    metrics = epoch_metrics(name, config, val)
    metrics.append(Metric("test/acc", test, 0, STOPPED.get(name, config.epochs)))
    if name == FAILED:
        metrics = metrics[:6]  # died in its first epoch
    client.log_batch(run_id, metrics=metrics, params=params)
    if name == FAILED:
        client.set_tag(run_id, "medgrid.error", "RuntimeError: injected failure")
        client.set_terminated(run_id, "FAILED")
        return run_id
    client.set_tag(run_id, "diverged", str(name == DIVERGED).lower())
    if name in STOPPED:
        client.set_tag(run_id, "stopped_early", "true")
        client.set_tag(run_id, "stopped_epoch", str(STOPPED[name]))
    if name in CORRECT:
        right, b, c = CORRECT[name]
        winner = right - b + c
        log_file(client, run_id, tmp, "val_correct.npy",
                 lambda p: np.save(p, correct_array(right, b, c, winner)))
    log_file(client, run_id, tmp, "confusion_matrix.csv",
             lambda p: confusion(name == CONSTANT).to_csv(p))
    client.set_terminated(run_id, "FINISHED")
    return run_id


# The sampled sweep: (learning_rate, dropout, val/acc, outcome, val_correct's c vs the winner)
SAMPLED_KINDS = {"learning_rate": "loguniform", "dropout": "uniform"}
SAMPLED = [
    (0.05, 0.10, 0.810, "finished", 0), (0.03, 0.20, 0.806, "finished", 4),
    (0.20, 0.05, 0.780, "finished", 40), (0.01, 0.30, 0.760, "finished", 60),
    (0.005, 0.40, 0.700, "finished", 110), (0.002, 0.45, 0.650, "finished", 160),
    (0.5, 0.15, 0.620, "finished", 190), (0.001, 0.25, 0.600, "finished", 210),
    (0.08, 0.35, 0.900, "stopped 2", 0), (0.0015, 0.05, 0.550, "stopped 1", 0),
    (0.0012, 0.12, 0.500, "stopped 1", 0), (0.9, 0.2, 0.0, "diverged", 0),
]
SAMPLED_WINNER_RIGHT = 810


def log_sampled_sweep(client: MlflowClient, work: Path) -> dict[str, str]:
    """A second experiment: one sampled sweep (tag medgrid.sampled) of 12 trials."""
    experiment_id = client.create_experiment("sampled", artifact_location=str(work / "art-s"))
    parent = client.create_run(experiment_id, run_name="sweep explore", tags={
        "medgrid.kind": "sweep", "medgrid.sweep": "explore", "dataset": "synthetic",
        "test_split": "hw1", "medgrid.sampled": json.dumps(SAMPLED_KINDS)}).info.run_id
    client.log_batch(parent, params=[Param("n_trials", str(len(SAMPLED))),
                                     Param("n_val", str(N_VAL)), Param("n_test", str(N_TEST)),
                                     Param("n_train", "2000")])
    runs = {}
    for number, (lr, dropout, val, how, c) in enumerate(SAMPLED, start=1):
        config = TrialConfig(study="explore_ffn", model="torch_ffn", seed=42, epochs=3,
                             learning_rate=lr, dropout=dropout, layers=2)
        name = f"explore_ffn trial {number}"
        runs[name] = log_sampled_trial(client, experiment_id, parent, config, name,
                                       (val, how, c), work / "tmp-s")
    client.set_terminated(parent, "FINISHED")
    return runs


def log_sampled_trial(client: MlflowClient, experiment_id: str, parent: str,
                      config: TrialConfig, name: str, outcome: tuple[float, str, int],
                      tmp: Path) -> str:
    """One trial of the sampled sweep."""
    val, how, c = outcome
    run_id = client.create_run(experiment_id, run_name=name, tags={
        "mlflow.parentRunId": parent, "medgrid.kind": "trial", "study": config.study,
        "seed": "42", "diverged": str(how == "diverged").lower()}).info.run_id
    last = int(how.split()[1]) if how.startswith("stopped") else config.epochs
    metrics = [Metric("epoch_time_s", 0.2, 0, e) for e in range(1, last + 1)]
    metrics += [Metric("val/acc", val, 0, last), Metric("test/acc", val - 0.05, 0, last),
                Metric("train/loss", math.nan if how == "diverged" else 0.5, 0, last)]
    client.log_batch(run_id, metrics=metrics,
                     params=[Param(k, str(v)) for k, v in config.model_dump().items()])
    if how.startswith("stopped"):
        client.set_tag(run_id, "stopped_early", "true")
        client.set_tag(run_id, "stopped_epoch", str(last))
    if how == "finished":
        right = SAMPLED_WINNER_RIGHT - c
        log_file(client, run_id, tmp, "val_correct.npy",
                 lambda p: np.save(p, correct_array(right, 0, c, SAMPLED_WINNER_RIGHT)))
    client.set_terminated(run_id, "FINISHED")
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """A sqlite store with one sweep's parent run and its child runs (one trial missing), and
    an experiment 'sampled' with a sampled sweep."""
    work = tmp_path_factory.mktemp("store")
    for name, text in STUDIES.items():
        (work / name).write_text(text)
    space = load_space(work / "sweep.yaml")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("medgrid", artifact_location=str(work / "art"))
    planned = merge_identical(expand(space))  # q2_batch batch=16 seed=1 is q2_lr lr=0.1 seed=1
    parent = client.create_run(experiment_id, run_name="sweep tiny", tags={
        "medgrid.kind": "sweep", "medgrid.sweep": "tiny", "space_file": str(space.path),
        "space_sha256": space.content_sha256, "dataset": "synthetic", "dataset_md5": "abc",
        "test_split": "hw1"}).info.run_id
    client.log_batch(parent, params=[Param("n_trials", str(len(planned))),
                                     Param("n_val", str(N_VAL)), Param("n_test", str(N_TEST)),
                                     Param("n_train", "2000")])
    runs = {t.name: log_trial(client, experiment_id, parent, t, work / "tmp") for t in planned
            if t.name != MISSING}
    client.set_terminated(parent, "FAILED")
    client.create_experiment("empty", artifact_location=str(work / "art-empty"))
    sampled = log_sampled_sweep(client, work)
    return {"work": work, "uri": uri, "client": client, "parent": parent, "runs": runs,
            "planned": planned, "sampled": sampled}


@pytest.fixture(scope="module")
def report(store) -> Path:
    out = store["work"] / "report"
    assert main(["report", "--tracking-uri", store["uri"], "--out", str(out)]) == 0
    return out


def table(report: Path, key: str) -> pd.DataFrame:
    return pd.read_csv(report / f"{key}.csv").set_index("config")


def summary_csv(report: Path) -> pd.DataFrame:
    return pd.read_csv(report / "summary.csv", keep_default_na=False, na_values=[""])


def test_summary_has_one_row_per_trial_with_the_logged_values(store, report: Path) -> None:
    summary = summary_csv(report)
    assert sorted(summary["run_name"]) == sorted(t.name for t in store["planned"])
    for column in ("study", "config", "seed", "status", "diverged", "stopped_early",
                   "stopped_epoch", "constant_prediction", "run_id", "model", "epochs",
                   "learning_rate", "batch_size", "hidden_size", "layers", "activation",
                   "dropout", "l2_decay", "optimizer", "dataset", "test_split", "train/loss",
                   "train/loss_sum", "train/acc", "val/acc", "val/loss", "test/acc",
                   "train_time_s", "epoch_time_mean_s", "duration_s"):
        assert column in summary, column
    by_name = summary.set_index("run_name")
    for name, run_id in store["runs"].items():
        run = store["client"].get_run(run_id)
        row = by_name.loc[name]
        assert row["run_id"] == run_id and row["study"] == run.data.tags["study"]
        assert row["learning_rate"] == float(run.data.params["learning_rate"])
        assert row["seed"] == int(run.data.params["seed"])
        for key, value in run.data.metrics.items():
            if name == DIVERGED and key in ("train/acc", "val/acc", "test/acc", "val/loss"):
                assert math.isnan(row[key]), key  # from before the blow-up or NaN weights
            else:
                assert row[key] == pytest.approx(value, nan_ok=True), (name, key)
    assert by_name.loc[MISSING, "status"] == "MISSING"
    assert by_name.loc[FAILED, "status"] == "FAILED"
    assert bool(by_name.loc[DIVERGED, "diverged"]) is True


def test_summary_times_stops_and_params_that_do_not_apply(report: Path) -> None:
    by_name = summary_csv(report).set_index("run_name")
    has_run = by_name["status"] != "MISSING"
    assert by_name.loc[has_run, "train_time_s"].notna().all()  # every trial, not one study
    assert by_name.loc["q2_batch batch=16 seed=1", "train_time_s"] == pytest.approx(6.0)
    assert by_name.loc["q2_batch batch=16 seed=1", "epoch_time_mean_s"] == pytest.approx(2.0)
    assert by_name.loc[FAILED, "train_time_s"] == pytest.approx(0.1)  # its one epoch
    assert pd.isna(by_name.loc[MISSING, "train_time_s"])
    stopped = by_name.loc["q2_batch batch=64 seed=1"]
    assert bool(stopped["stopped_early"]) and stopped["stopped_epoch"] == 2
    assert stopped["train_time_s"] == pytest.approx(2.0)  # the 2 epochs it ran
    assert not by_name["stopped_early"].drop("q2_batch batch=64 seed=1").any()
    perceptron = by_name.loc["q1_perceptron seed=1"]
    for param in ("batch_size", "hidden_size", "layers", "activation", "dropout", "l2_decay",
                  "optimizer"):
        assert pd.isna(perceptron[param]), param
    assert perceptron["learning_rate"] == 1.0 and perceptron["epochs"] == 3
    assert by_name.loc["q2_lr lr=0.1 seed=2", "batch_size"] == 16
    assert by_name.loc["q2_lr lr=0.1 seed=2", "optimizer"] == "sgd"
    assert bool(perceptron["constant_prediction"]) is True
    assert bool(by_name.loc["q2_lr lr=0.1 seed=2", "constant_prediction"]) is False


def test_one_run_shared_by_two_studies_is_read_by_both_tables(store, report: Path) -> None:
    shared = store["runs"]["q2_batch batch=16 seed=1"]
    assert "q2_lr lr=0.1 seed=1" not in store["runs"]  # trained once, for both studies
    summary = summary_csv(report)
    row = summary[summary["run_id"] == shared]
    assert len(row) == 1 and row.iloc[0]["studies"] == "q2_batch,q2_lr"
    assert table(report, "table5_q2_batch").loc["batch=16", "n"] == 1
    lr = table(report, "table6_q2_lr").loc["lr=0.1"]
    assert lr["n"] == 3  # seeds 2 and 3 of its own, seed 1 shared with q2_batch
    assert lr["val/acc"] == pytest.approx((0.80 + 0.81 + 0.82) / 3)


def test_winner_is_chosen_by_validation_accuracy_not_test(report: Path) -> None:
    lr = table(report, "table6_q2_lr")
    assert lr.loc["lr=0.1", "verdict"] == "winner"
    assert lr.loc["lr=0.01", "test/acc"] > lr.loc["lr=0.1", "test/acc"]
    assert lr.loc["lr=0.1", "n"] == 3
    assert lr.loc["lr=0.1", "val/acc"] == pytest.approx(0.81)
    assert lr.loc["lr=0.1", "val/acc_std"] == pytest.approx(0.01)
    # Three seeds: mean ± t-interval over seeds (widened where Wilson's, on the N_VAL images, is
    # wider: here its lower end), and a paired t-test by seed.
    half = 4.302653 * 0.01 / math.sqrt(3)
    wilson_low, wilson_high = wilson_interval(round(0.81 * N_VAL), N_VAL)
    assert lr.loc["lr=0.1", "val/acc_lo"] == pytest.approx(min(0.81 - half, wilson_low), rel=1e-5)
    assert lr.loc["lr=0.1", "val/acc_hi"] == pytest.approx(max(0.81 + half, wilson_high), rel=1e-5)
    assert lr.loc["lr=0.01", "verdict"] == "below"
    assert lr.loc["lr=0.01", "test_vs_winner"] == "paired t over seeds"
    assert lr.loc["lr=0.01", "p_vs_winner"] == pytest.approx(0.0033168, rel=1e-3)
    text = (report / "report.md").read_text()
    assert "Winner by validation accuracy: lr=0.1" in text
    assert "Test accuracy alone would have picked lr=0.01" in text
    assert "n = 0–3 seeds" not in text and "n = 3 seeds per configuration (lr=1.0: none" in text


def test_diverged_failed_and_missing_trials_are_shown_not_dropped(store, report: Path) -> None:
    row = table(report, "table6_q2_lr").loc["lr=1.0"]
    assert row["status"] == "1 diverged, 1 failed, 1 missing"
    assert row["verdict"] == "diverged"  # best val/acc of all before it blew up, not eligible
    assert row["n"] == 0 and pd.isna(row["val/acc"]) and pd.isna(row["test/acc"])
    assert pd.isna(row["p_vs_winner"])
    text = (report / "report.md").read_text()
    line = next(li for li in text.splitlines() if li.startswith("| lr=1.0 |"))
    assert line.count("| diverged |") >= 3  # train loss, val acc, test acc cells
    assert "0.9000" not in line and "0.2500" not in line  # never the NaN weights' numbers
    assert f"FAILED trial {FAILED}: RuntimeError: injected failure" in text
    assert f"MISSING trial {MISSING}" in text


def test_four_images_worse_on_the_same_images_is_within_noise(report: Path) -> None:
    """One seed each: exact McNemar on the shared validation images, b = 0, c = 4 -> 0.125
    (it used to be a Wald-interval overlap; the paired test replaced it)."""
    logreg = table(report, "table2_q1_logreg")
    assert logreg.loc["lr=0.001", "verdict"] == "winner"
    assert logreg.loc["lr=0.01", "verdict"] == "within noise"
    assert logreg.loc["lr=0.01", "test_vs_winner"] == "exact McNemar"
    assert logreg.loc["lr=0.01", "p_vs_winner"] == pytest.approx(0.125)
    assert logreg.loc["lr=0.01", "test_detail"] == "b = 0, c = 4"
    low, high = wilson_interval(664, N_VAL)
    assert logreg.loc["lr=0.001", "val/acc_lo"] == pytest.approx(low, rel=1e-5)
    assert logreg.loc["lr=0.001", "val/acc_hi"] == pytest.approx(high, rel=1e-5)
    assert "val/acc_ci95" not in logreg
    text = (report / "report.md").read_text()
    assert "lr=0.01 (p = 0.125, exact McNemar; b = 0, c = 4)" in text


def test_a_large_paired_difference_is_below_and_no_artifact_is_noise_unknown(report: Path
                                                                              ) -> None:
    batch = table(report, "table5_q2_batch")
    assert batch.loc["batch=1024", "verdict"] == "below"
    assert batch.loc["batch=1024", "test_detail"] == "b = 20, c = 120"
    assert batch.loc["batch=1024", "p_vs_winner"] < 1e-15
    models = table(report, "table3_models")
    assert models.loc["Perceptron", "verdict"] == "noise unknown"  # no val_correct.npy logged
    assert pd.isna(models.loc["Perceptron", "p_vs_winner"])
    assert "no val_correct.npy" in models.loc["Perceptron", "test_vs_winner"]


def test_an_early_stopped_trial_never_wins_but_is_shown(report: Path) -> None:
    batch = table(report, "table5_q2_batch")
    assert batch.loc["batch=64", "val/acc"] > batch.loc["batch=16", "val/acc"]
    assert batch.loc["batch=64", "verdict"] == "stopped at epoch 2"
    assert batch.loc["batch=16", "verdict"] == "winner"
    assert batch.loc["batch=64", "status"] == "1 stopped at epoch 2"
    assert "batch=64 (stopped at epoch 2)" in (report / "report.md").read_text()


def test_the_mlp_table_shows_the_summed_training_loss(report: Path) -> None:
    [path] = report.glob("table*_q1_mlp.csv")
    mlp = pd.read_csv(path).iloc[0]
    assert path.name == "table8_q1_mlp.csv"
    assert mlp["train/loss_sum"] == pytest.approx(100 / 3)  # the last epoch's sum
    assert mlp["train/loss_sum_ref"] == pytest.approx(57795.7751)  # the homework's figure
    # A sum grows with the images: no difference against a sum over 97,477 images.
    assert pd.isna(mlp["train/loss_sum_diff"])
    text = (report / "report.md").read_text()
    assert "| train loss (sum) |" in text
    assert "cross-entropy summed over the epoch's 2000 training images" in text
    assert "published sum is over 97,477 training images, these runs summed over 2000" in text


def test_a_constant_prediction_is_labelled(report: Path) -> None:
    perceptron = table(report, "table1_q1_perceptron").iloc[0]
    assert perceptron["status"] == "1 finished (constant prediction)"
    assert "Constant prediction (one class for every test image" in (
        report / "report.md").read_text()


def test_published_numbers_and_differences_sit_beside_measured_ones(report: Path) -> None:
    perceptron = table(report, "table1_q1_perceptron").iloc[0]
    assert perceptron["val/acc_ref"] == pytest.approx(0.4610)
    assert perceptron["val/acc_diff"] == pytest.approx(0.46 - 0.4610)
    assert perceptron["test/acc_ref"] == pytest.approx(0.3422)
    lr = table(report, "table6_q2_lr")
    assert lr.loc["lr=0.01", "train/loss_ref"] == pytest.approx(0.4855)
    text = (report / "report.md").read_text()
    assert "not OCTMNIST" in text and "published after 20 epochs; these runs trained 3" in text


def test_model_comparison_and_training_time_as_a_ratio(report: Path) -> None:
    models = table(report, "table3_models")
    assert list(models.index) == ["Perceptron", "Logistic Regression", "MLP"]
    assert models.loc["Logistic Regression", "setting"] == "lr=0.001"
    assert models.loc["MLP", "verdict"] == "winner"
    assert models.loc["Logistic Regression", "verdict"] == "below"
    assert models.loc["Logistic Regression", "test_detail"] == "b = 0, c = 116"
    batch = table(report, "table5_q2_batch")
    assert batch.loc["batch=16", "train_time_s"] == pytest.approx(6.0)
    assert batch.loc["batch=1024", "train_time_s"] == pytest.approx(1.5)
    assert batch.loc["batch=16", "time_ratio_vs_1024"] == pytest.approx(4.0)
    assert batch.loc["batch=16", "time_ratio_vs_1024_ref"] == pytest.approx(159 / 15)
    assert batch.loc["batch=1024", "time_ratio_vs_1024"] == pytest.approx(1.0)
    assert pd.isna(batch.loc["batch=64", "time_ratio_vs_1024"])  # 2 of 3 epochs: no ratio
    # Seconds from the authors' machine are never set against these.
    assert not [c for c in batch if c.startswith("train_time_s_")
                and c not in ("train_time_s_std",)]
    text = (report / "report.md").read_text()
    assert "batch=16 4.0x (published 10.6x)" in text


def test_tables_and_figures_are_numbered_and_captioned(report: Path) -> None:
    text = (report / "report.md").read_text()
    tables = re.findall(r"^## Table (\d+): ", text, flags=re.M)
    assert sorted(map(int, tables)) == [1, 2, 3, 5, 6, 8]  # the MLP's own table is 8
    figures = re.findall(r"^\*Figure (\d+): ", text, flags=re.M)
    assert [int(f) for f in figures] == list(range(1, len(figures) + 1)) and figures
    headings = re.findall(r"^\*Figure \d+: ([^,]*),", text, flags=re.M)
    assert len(headings) == len(figures) and all(h.startswith("study ") for h in headings)
    assert "up to 5" not in text
    assert "n = 1 seed per configuration" in text  # the one-seed studies say so
    assert "Seeds per study: q1_perceptron 1 (seed 1);" in text
    assert "q2_lr 3 (seeds 1, 2, 3)" in text
    assert "exact McNemar test on the shared validation images" in text
    assert "α = 0.05" in text


def test_html_is_one_self_contained_file(report: Path) -> None:
    html = (report / "report.html").read_text()
    links = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", html)
    assert links and all(link.startswith("data:image/png;base64,") for link in links)
    assert "http://" not in html and "https://" not in html
    pngs = sorted(p.name for p in report.glob("*.png"))
    assert "fig_q2_lr.png" in pngs and "fig_q2_batch_time.png" in pngs
    assert len(links) == len(pngs)
    markdown = (report / "report.md").read_text()
    assert all(f"]({png})" in markdown for png in pngs)


@pytest.fixture(scope="module")
def sampled_report(store) -> Path:
    out = store["work"] / "report-sampled"
    assert main(["report", "--tracking-uri", store["uri"], "--experiment", "sampled", "--out",
                 str(out), "--no-log"]) == 0
    return out


def test_a_sampled_study_gets_a_top_k_table(sampled_report: Path) -> None:
    [path] = sampled_report.glob("table*_explore_ffn_top10.csv")
    top = pd.read_csv(path)
    assert len(top) == 10
    assert list(top["val/acc"].iloc[:8]) == sorted(top["val/acc"].iloc[:8], reverse=True)
    assert top.loc[0, "verdict"] == "winner" and top.loc[0, "val/acc"] == pytest.approx(0.81)
    assert top.loc[1, "verdict"] == "within noise"
    assert top.loc[1, "p_vs_winner"] == pytest.approx(0.125)
    assert set(top.loc[2:7, "verdict"]) == {"below"}
    # The best val/acc of all was stopped early: listed after the finished ones, never winner.
    assert top.loc[8, "val/acc"] == pytest.approx(0.90)
    assert list(top["verdict"].iloc[8:]) == ["stopped at epoch 2", "stopped at epoch 1"]
    assert top.loc[0, "run_name"] == "explore_ffn trial 1"
    text = (sampled_report / "report.md").read_text()
    assert "Not shown: 1 stopped, 1 diverged." in text
    assert "Sampled search: learning_rate (loguniform), dropout (uniform)." in text
    summary = summary_csv(sampled_report)
    assert len(summary) == len(SAMPLED) and summary["stopped_early"].sum() == 3


def test_a_sampled_study_has_one_figure_against_each_sampled_value(sampled_report: Path
                                                                     ) -> None:
    assert sorted(p.name for p in sampled_report.glob("*.png")) == [
        "fig_explore_ffn_sampled.png"]
    text = (sampled_report / "report.md").read_text()
    caption = next(li for li in text.splitlines() if li.startswith("*Figure 1: "))
    assert "learning_rate (log axis)" in caption and "dropout (uniform)" in caption
    assert "hollow: stopped early" in caption and "1 trial without a validation" in caption


def test_report_is_logged_to_the_sweeps_parent_run(store, report: Path) -> None:
    logged = {a.path for a in store["client"].list_artifacts(store["parent"], "report")}
    assert {"report/report.html", "report/report.md", "report/summary.csv"} <= logged


def test_rerun_replaces_the_old_report_and_a_failed_one_keeps_it(store, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["report", "--tracking-uri", store["uri"], "--out", str(out), "--no-log"]
    assert main(args) == 0
    first = (out / "report.html").stat().st_mtime_ns
    assert main(args) == 0  # an earlier medgrid report is replaced as a whole
    assert (out / "report.html").stat().st_mtime_ns >= first and (out / "summary.csv").is_file()
    assert main([*args, "--reference", str(tmp_path / "nope.csv")]) == 2
    assert (out / "report.html").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging left behind


def _tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*")
            if p.is_file()}


FOREIGN_OUT = {
    "a folder of the user's": lambda tmp: tmp / "mine",
    "the current directory": lambda tmp: Path("."),
    "a parent of the current directory": lambda tmp: Path(".."),
    "a file": lambda tmp: tmp / "mine" / "notes.txt",
    "a report with a file the user added": lambda tmp: tmp / "added",
}


@pytest.mark.parametrize("case", FOREIGN_OUT)
def test_out_never_touches_what_medgrid_did_not_write(store, case: str, tmp_path: Path,
                                                      capsys, monkeypatch) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("my notes")
    (tmp_path / "mlflow.db").write_text("not really a store, but precious")
    assert main(["report", "--tracking-uri", store["uri"], "--out", str(tmp_path / "added"),
                 "--no-log"]) == 0
    (tmp_path / "added" / "my_analysis.py").write_text("print('mine')")
    monkeypatch.chdir(tmp_path / "mine")
    before = _tree(tmp_path)
    capsys.readouterr()
    out = FOREIGN_OUT[case](tmp_path)
    assert main(["report", "--tracking-uri", store["uri"], "--out", str(out), "--no-log"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medgrid: error: --out ") and err.count("\n") == 1, err
    assert _tree(tmp_path) == before  # every file still there, nothing staged beside


def test_an_empty_or_new_directory_receives_the_report(store, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "new" / "nested"):
        assert main(["report", "--tracking-uri", store["uri"], "--out", str(out),
                     "--no-log"]) == 0
        assert (out / "report.html").is_file() and (out / ".medgrid-report.json").is_file()


def _old_schema(store) -> list[str]:
    client = store["client"]
    experiment_id = client.create_experiment("old", artifact_location=str(store["work"] / "o"))
    parent = client.create_run(experiment_id, tags={"medgrid.kind": "sweep"}).info.run_id
    client.create_run(experiment_id, tags={"mlflow.parentRunId": parent})
    return ["--experiment", "old"]


BAD_INPUTS = {
    "unknown experiment": lambda s: ["--experiment", "nope"],
    "empty experiment": lambda s: ["--experiment", "empty"],
    "unknown sweep": lambda s: ["--sweep", "0" * 32],
    "sweep is a trial run": lambda s: ["--sweep", next(iter(s["runs"].values()))],
    "older schema": _old_schema,
    "unreadable reference": lambda s: ["--reference", str(s["work"])],
    "malformed reference": lambda s: ["--reference", str(s["work"] / "sweep.yaml")],
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_and_no_output(store, case: str, tmp_path: Path,
                                                    capsys) -> None:
    out = tmp_path / "out"
    extra = BAD_INPUTS[case](store)
    assert main(["report", "--tracking-uri", store["uri"], "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medgrid: error: ") and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_and_missing_store_are_user_errors(tmp_path: Path, capsys,
                                                              monkeypatch) -> None:
    monkeypatch.setattr(tracking_server, "REMOTE_TIMEOUT_S", 0.5)
    out = tmp_path / "out"
    for uri in (f"http://127.0.0.1:{free_port()}", f"sqlite:///{tmp_path / 'absent.db'}"):
        assert main(["report", "--tracking-uri", uri, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("medgrid: error: ") and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


REAL_SPACE = {
    "linear.yaml": "name: q1_logreg\nmodel: numpy_logreg\n"
                   "params: {epochs: 2, learning_rate: [0.01, 0.001]}\n",
    "net.yaml": "name: q2_lr\nmodel: torch_ffn\nparams: {epochs: 2, batch_size: 32, "
                "hidden_size: 8, layers: 1, learning_rate: [0.05, 0.01]}\n",
    "both.yaml": "name: both\ninclude: [linear.yaml, net.yaml]\n",
}


@pytest.mark.slow
def test_report_of_a_real_tiny_sweep(tmp_path: Path, tiny_npz: Path, monkeypatch) -> None:
    for name, text in REAL_SPACE.items():
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    assert main(["tune", "both.yaml", "--data", str(tiny_npz), "--num-cpus", "2"]) == 0
    assert main(["report"]) == 0  # the defaults: ./mlflow.db, latest sweep, ./report_out
    summary = pd.read_csv(tmp_path / "report_out" / "summary.csv").set_index("run_id")
    assert len(summary) == 4 and set(summary["status"]) == {"FINISHED"}
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for run_id, row in summary.iterrows():
        run = client.get_run(run_id)
        assert row["val/acc"] == pytest.approx(run.data.metrics["val/acc"])
        assert row["learning_rate"] == float(run.data.params["learning_rate"])
    for key in ("table2_q1_logreg", "table6_q2_lr"):
        assert (table(tmp_path / "report_out", key)["verdict"] == "winner").sum() == 1
    # Logged through a private server, as the trials' artifacts were.
    assert list(Path("mlruns").glob("*/*/artifacts/report/report.html"))


@pytest.mark.slow
def test_seeds_option_gives_tables_over_two_seeds_with_a_paired_t_test(
        tmp_path: Path, tiny_npz: Path, monkeypatch) -> None:
    (tmp_path / "net.yaml").write_text(REAL_SPACE["net.yaml"])
    monkeypatch.chdir(tmp_path)
    assert main(["tune", "net.yaml", "--data", str(tiny_npz), "--num-cpus", "2",
                 "--seeds", "7,8"]) == 0
    assert main(["report"]) == 0
    summary = pd.read_csv(tmp_path / "report_out" / "summary.csv")
    assert sorted(summary["seed"]) == [7, 7, 8, 8]  # the file's seed 42 replaced
    lr_table = table(tmp_path / "report_out", "table6_q2_lr")
    assert list(lr_table["n"]) == [2, 2]
    loser = lr_table[lr_table["verdict"] != "winner"].iloc[0]
    assert loser["test_vs_winner"] == "paired t over seeds"
    expected = paired_t_p(summary, loser["learning_rate"], lr_table)
    assert loser["p_vs_winner"] == pytest.approx(expected)
    html = (tmp_path / "report_out" / "report.html").read_text()
    assert "n = 2 seeds per configuration" in html


def paired_t_p(summary: pd.DataFrame, loser_lr: float, lr_table: pd.DataFrame) -> float:
    """scipy's paired t-test of the loser's val/acc against the winner's, paired by seed."""
    winner_lr = lr_table[lr_table["verdict"] == "winner"].iloc[0]["learning_rate"]
    by = summary.set_index(["learning_rate", "seed"])["val/acc"]
    seeds = [7, 8]
    return float(ttest_rel([by[(loser_lr, s)] for s in seeds],
                           [by[(winner_lr, s)] for s in seeds]).pvalue)


@pytest.mark.fast
def test_trials_are_listed_by_study_config_and_seed_whatever_order_they_started_in() -> None:
    """Two trials run side by side start in either order; summary.csv and the tables must not
    change with it (the rows used to follow the runs' start times)."""
    from pipeline.report.runs import in_reading_order

    started = pd.DataFrame({
        "study": ["q2_lr", "q1_mlp", "q2_lr", "q2_lr", "q2_lr", "extra"],
        "model": ["torch_ffn", "numpy_mlp", "torch_ffn", "torch_ffn", "torch_ffn", "torch_ffn"],
        "learning_rate": [0.1, 0.5, 1.0, 0.001, 0.1, 0.01],
        "seed": [2, 1, 1, 1, 1, 1],
        "attempt": ["", "", "", "", "", ""],
        "run_name": ["b", "m", "c", "a", "b1", "x"],
    })
    want = [("q1_mlp", 0.5, 1), ("q2_lr", 0.001, 1), ("q2_lr", 0.1, 1), ("q2_lr", 0.1, 2),
            ("q2_lr", 1.0, 1), ("extra", 0.01, 1)]  # the space's studies first, then the rest
    for order in ([0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [3, 0, 5, 1, 4, 2]):
        listed = in_reading_order(started.iloc[order], ["q1_mlp", "q2_lr"])
        assert list(listed[["study", "learning_rate", "seed"]].itertuples(index=False,
                                                                           name=None)) == want
    # Without the space, studies come in the order the frame gives them.
    assert in_reading_order(started)["study"].drop_duplicates().tolist() == [
        "q2_lr", "q1_mlp", "extra"]
