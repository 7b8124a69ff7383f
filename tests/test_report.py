"""`medgrid report` on runs built directly with the MLflow client: several seeds, a failed, a
diverged and a missing trial, test accuracy that disagrees with validation accuracy."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from pipeline import tracking_server
from pipeline.cli import main
from pipeline.config import PlannedTrial, expand, load_space
from pipeline.tracking_server import free_port

STUDIES = {
    "q1_perceptron.yaml": "name: q1_perceptron\nmodel: numpy_perceptron\nseeds: [1]\n"
                          "params: {epochs: 3, learning_rate: 1.0}\n",
    "q1_logreg.yaml": "name: q1_logreg\nmodel: numpy_logreg\nseeds: [1]\n"
                      "params: {epochs: 3, learning_rate: [0.01, 0.001]}\n",
    "q2_batch.yaml": "name: q2_batch\nmodel: torch_ffn\nseeds: [1]\n"
                     "params: {epochs: 3, learning_rate: 0.1, batch_size: [16, 1024]}\n",
    "q2_lr.yaml": "name: q2_lr\nmodel: torch_ffn\nseeds: [1, 2, 3]\n"
                  "params: {epochs: 3, batch_size: 16, learning_rate: [1.0, 0.1, 0.01]}\n",
    "sweep.yaml": "name: tiny\ninclude: [q1_perceptron.yaml, q1_logreg.yaml, q2_batch.yaml, "
                  "q2_lr.yaml]\n",
}
N_VAL, N_TEST = 1000, 529
# Final (val/acc, test/acc) per trial name; by test accuracy lr=0.01 would win q2_lr, by
# validation accuracy lr=0.1 does. lr=1.0 seed=1 diverges with the best val/acc of all.
FINAL = {
    "q1_perceptron seed=1": (0.46, 0.35),
    "q1_logreg lr=0.01 seed=1": (0.660, 0.58),
    "q1_logreg lr=0.001 seed=1": (0.664, 0.59),  # 0.004 apart on 1,000 images: noise
    "q2_batch batch=16 seed=1": (0.80, 0.75),
    "q2_batch batch=1024 seed=1": (0.70, 0.72),
    "q2_lr lr=0.1 seed=1": (0.80, 0.70), "q2_lr lr=0.1 seed=2": (0.81, 0.71),
    "q2_lr lr=0.1 seed=3": (0.82, 0.72),
    "q2_lr lr=0.01 seed=1": (0.70, 0.80), "q2_lr lr=0.01 seed=2": (0.71, 0.81),
    "q2_lr lr=0.01 seed=3": (0.72, 0.82),
    "q2_lr lr=1.0 seed=1": (0.90, 0.25),
}
DIVERGED = "q2_lr lr=1.0 seed=1"
FAILED = "q2_lr lr=1.0 seed=2"
MISSING = "q2_lr lr=1.0 seed=3"
EPOCH_TIME = {"q2_batch batch=16 seed=1": 2.0, "q2_batch batch=1024 seed=1": 0.5}


def log_trial(client: MlflowClient, experiment_id: str, parent: str, trial: PlannedTrial
              ) -> str:
    """A child run as `medgrid tune` writes it: tags, every config field as a param, 3 epochs."""
    name, config = trial.name, trial.config
    run = client.create_run(experiment_id, run_name=name, tags={
        "mlflow.parentRunId": parent, "medgrid.kind": "trial", "study": config.study,
        "seed": str(config.seed), "node": "test", "medgrid.attempt": "1"})
    run_id = run.info.run_id
    params = [Param(k, str(v)) for k, v in config.model_dump().items()]
    params += [Param("dataset", "synthetic"), Param("test_split", "hw1")]
    val, test = FINAL.get(name, (0.5, 0.5))
    metrics = []
    for epoch in range(1, config.epochs + 1):
        loss = math.nan if name == DIVERGED and epoch == config.epochs else 1.0 / epoch
        values = {"train/loss": loss, "train/loss_sum": loss * 100, "epoch_time_s":
                  EPOCH_TIME.get(name, 0.1)}
        if not math.isnan(loss):
            values.update({"train/acc": val + 0.01, "val/acc": val - 0.1 / epoch + 0.1 / 3,
                           "val/loss": 1.5 / epoch})
        metrics += [Metric(k, v, 0, epoch) for k, v in values.items()]
    metrics.append(Metric("test/acc", test, 0, config.epochs))
    if name == FAILED:
        metrics = metrics[:6]  # died in its first epoch
    client.log_batch(run_id, metrics=metrics, params=params)
    if name == FAILED:
        client.set_tag(run_id, "medgrid.error", "RuntimeError: injected failure")
        client.set_terminated(run_id, "FAILED")
    else:
        client.set_tag(run_id, "diverged", str(name == DIVERGED).lower())
        client.set_terminated(run_id, "FINISHED")
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """A sqlite store with one sweep's parent run and its child runs (one trial missing)."""
    work = tmp_path_factory.mktemp("store")
    for name, text in STUDIES.items():
        (work / name).write_text(text)
    space = load_space(work / "sweep.yaml")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("medgrid", artifact_location=str(work / "art"))
    planned = expand(space)
    parent = client.create_run(experiment_id, run_name="sweep tiny", tags={
        "medgrid.kind": "sweep", "medgrid.sweep": "tiny", "space_file": str(space.path),
        "space_sha256": space.content_sha256, "dataset": "synthetic", "dataset_md5": "abc",
        "test_split": "hw1"}).info.run_id
    client.log_batch(parent, params=[Param("n_trials", str(len(planned))),
                                     Param("n_val", str(N_VAL)), Param("n_test", str(N_TEST)),
                                     Param("n_train", "2000")])
    runs = {t.name: log_trial(client, experiment_id, parent, t) for t in planned
            if t.name != MISSING}
    client.set_terminated(parent, "FAILED")
    client.create_experiment("empty", artifact_location=str(work / "art-empty"))
    return {"work": work, "uri": uri, "client": client, "parent": parent, "runs": runs,
            "planned": planned}


@pytest.fixture(scope="module")
def report(store) -> Path:
    out = store["work"] / "report"
    assert main(["report", "--tracking-uri", store["uri"], "--out", str(out)]) == 0
    return out


def table(report: Path, key: str) -> pd.DataFrame:
    return pd.read_csv(report / f"{key}.csv").set_index("config")


def test_summary_has_one_row_per_trial_with_the_logged_values(store, report: Path) -> None:
    summary = pd.read_csv(report / "summary.csv", keep_default_na=False, na_values=[""])
    assert sorted(summary["run_name"]) == sorted(t.name for t in store["planned"])
    for column in ("study", "config", "seed", "status", "diverged", "run_id", "model", "epochs",
                   "learning_rate", "batch_size", "hidden_size", "layers", "activation",
                   "dropout", "l2_decay", "optimizer", "dataset", "test_split", "train/loss",
                   "train/acc", "val/acc", "val/loss", "test/acc", "duration_s"):
        assert column in summary, column
    by_name = summary.set_index("run_name")
    for name, run_id in store["runs"].items():
        run = store["client"].get_run(run_id)
        row = by_name.loc[name]
        assert row["run_id"] == run_id and row["study"] == run.data.tags["study"]
        assert row["learning_rate"] == float(run.data.params["learning_rate"])
        assert row["seed"] == int(run.data.params["seed"])
        for key, value in run.data.metrics.items():
            assert row[key] == pytest.approx(value, nan_ok=True), (name, key)
    assert by_name.loc[MISSING, "status"] == "MISSING"
    assert by_name.loc[FAILED, "status"] == "FAILED"
    assert bool(by_name.loc[DIVERGED, "diverged"]) is True


def test_winner_is_chosen_by_validation_accuracy_not_test(report: Path) -> None:
    lr = table(report, "table6_q2_lr")
    assert lr.loc["lr=0.1", "verdict"] == "winner"
    assert lr.loc["lr=0.01", "test/acc"] > lr.loc["lr=0.1", "test/acc"]
    assert lr.loc["lr=0.1", "n"] == 3
    assert lr.loc["lr=0.1", "val/acc"] == pytest.approx(0.81)
    assert lr.loc["lr=0.1", "val/acc_std"] == pytest.approx(0.01)
    assert lr.loc["lr=0.01", "verdict"] == "below"
    text = (report / "report.md").read_text()
    assert "Winner by validation accuracy: lr=0.1" in text
    assert "Test accuracy alone would have picked lr=0.01" in text


def test_diverged_failed_and_missing_trials_are_shown_not_dropped(store, report: Path) -> None:
    row = table(report, "table6_q2_lr").loc["lr=1.0"]
    assert row["status"] == "1 diverged, 1 failed, 1 missing"
    assert row["verdict"] == "diverged"  # best val/acc of all, yet not eligible
    logged = store["client"].get_run(store["runs"][DIVERGED]).data.metrics
    assert row["val/acc"] == pytest.approx(logged["val/acc"]) and row["n"] == 1
    text = (report / "report.md").read_text()
    assert f"FAILED trial {FAILED}: RuntimeError: injected failure" in text
    assert f"MISSING trial {MISSING}" in text


def test_a_difference_within_the_95_percent_interval_is_called_noise(report: Path) -> None:
    logreg = table(report, "table2_q1_logreg")
    assert logreg.loc["lr=0.001", "verdict"] == "winner"
    assert logreg.loc["lr=0.01", "verdict"] == "within noise"
    # One seed: the binomial error of an accuracy on the validation set's 1,000 images.
    half = 1.96 * math.sqrt(0.664 * 0.336 / N_VAL)
    assert logreg.loc["lr=0.001", "val/acc_ci95"] == pytest.approx(half, rel=1e-5)


def test_published_numbers_and_differences_sit_beside_measured_ones(report: Path) -> None:
    perceptron = table(report, "table1_q1_perceptron").iloc[0]
    assert perceptron["val/acc_ref"] == pytest.approx(0.4610)
    assert perceptron["val/acc_diff"] == pytest.approx(0.46 - 0.4610)
    assert perceptron["test/acc_ref"] == pytest.approx(0.3422)
    lr = table(report, "table6_q2_lr")
    assert lr.loc["lr=0.01", "train/loss_ref"] == pytest.approx(0.4855)
    text = (report / "report.md").read_text()
    assert "not OCTMNIST" in text and "published after 20 epochs; these runs trained 3" in text


def test_model_comparison_and_training_time(report: Path) -> None:
    models = table(report, "table3_models")
    assert list(models.index) == ["Perceptron", "Logistic Regression"]
    assert models.loc["Logistic Regression", "setting"] == "lr=0.001"
    assert models.loc["Logistic Regression", "verdict"] == "winner"
    batch = table(report, "table5_q2_batch")
    assert batch.loc["batch=16", "train_time_s"] == pytest.approx(6.0)
    assert batch.loc["batch=1024", "train_time_s"] == pytest.approx(1.5)
    assert batch.loc["batch=16", "train_time_s_ref"] == pytest.approx(159)


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
