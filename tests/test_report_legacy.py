"""`medgrid report` reads runs logged before a TrialConfig field existed, when what they used is
known: runs without a `dtype` param trained in float32 (numpy and torch alike). Runs that lack an
older field are still refused."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from pipeline.cli import main
from pipeline.config import expand, load_space

STUDIES = {
    "mlp.yaml": "name: q1_mlp\nmodel: numpy_mlp\nseeds: [1, 2]\n"
                "params: {epochs: 2, learning_rate: 0.001}\n",
    "ffn.yaml": "name: q2_lr\nmodel: torch_ffn\nseeds: [1]\n"
                "params: {epochs: 2, learning_rate: 0.1}\n",
    "sweep.yaml": "name: legacy\ninclude: [mlp.yaml, ffn.yaml]\n",
}


def log_store(work: Path, drop: dict[str, str]) -> str:
    """A sweep's parent run and one child run per planned trial, each logging its config as
    params but for the param named in `drop` (run name -> param); returns the tracking URI."""
    for name, text in STUDIES.items():
        (work / name).write_text(text)
    space = load_space(work / "sweep.yaml")
    planned = expand(space)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("medgrid", artifact_location=str(work / "art"))
    parent = client.create_run(experiment_id, run_name="sweep legacy", tags={
        "medgrid.kind": "sweep", "medgrid.sweep": "legacy", "space_file": str(space.path),
        "space_sha256": space.content_sha256, "dataset": "synthetic",
        "test_split": "hw1"}).info.run_id
    client.log_batch(parent, params=[Param("n_trials", str(len(planned))),
                                     Param("n_val", "100"), Param("n_test", "100")])
    for trial in planned:
        config = trial.config
        run_id = client.create_run(experiment_id, run_name=trial.name, tags={
            "mlflow.parentRunId": parent, "medgrid.kind": "trial", "study": config.study,
            "seed": str(config.seed)}).info.run_id
        params = [Param(k, str(v)) for k, v in config.model_dump().items()
                  if k != drop.get(trial.name)]
        metrics = [Metric(key, value, 0, epoch) for epoch in (1, 2) for key, value in
                   {"train/loss": 1.0 / epoch, "val/acc": 0.5 + epoch / 10}.items()]
        client.log_batch(run_id, metrics=metrics, params=params)
        client.set_tag(run_id, "diverged", "false")
        client.set_terminated(run_id, "FINISHED")
    client.set_terminated(parent, "FINISHED")
    return uri


def test_runs_without_a_dtype_param_are_read_as_float32(tmp_path: Path) -> None:
    # Both seeds' numpy runs and the torch run predate `dtype`, the numpy seed 2 run does not.
    uri = log_store(tmp_path, {"q1_mlp seed=1": "dtype", "q2_lr seed=1": "dtype"})
    out = tmp_path / "report"
    assert main(["report", "--tracking-uri", uri, "--out", str(out)]) == 0
    summary = pd.read_csv(out / "summary.csv").set_index("run_name")
    assert summary["dtype"].to_dict() == {"q1_mlp seed=1": "float32",
                                          "q1_mlp seed=2": "float64",
                                          "q2_lr seed=1": "float32"}
    assert (summary["status"] == "FINISHED").all()


def test_a_run_without_an_older_param_is_still_refused(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    uri = log_store(tmp_path, {"q1_mlp seed=1": "optimizer"})
    capsys.readouterr()  # MLflow's own lines from creating the store
    assert main(["report", "--tracking-uri", uri, "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lacks param 'optimizer'" in err[0], err
    assert not (tmp_path / "report").exists()
