"""`medgrid report` reads runs logged before a TrialConfig field existed: such a run is read with
the field's default, except `dtype`, which every run before it trained in float32 (numpy and
torch alike). A run without a required field (no default) is refused."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import small_sweep_store

from pipeline.cli import main


def test_runs_without_a_dtype_param_are_read_as_float32(tmp_path: Path) -> None:
    # Both seeds' numpy runs and the torch run predate `dtype`, the numpy seed 2 run does not.
    uri = small_sweep_store(tmp_path, {"q1_mlp seed=1": "dtype", "q2_lr seed=1": "dtype"})
    out = tmp_path / "report"
    assert main(["report", "--tracking-uri", uri, "--out", str(out)]) == 0
    summary = pd.read_csv(out / "summary.csv").set_index("run_name")
    assert summary["dtype"].to_dict() == {"q1_mlp seed=1": "float32",
                                          "q1_mlp seed=2": "float64",
                                          "q2_lr seed=1": "float32"}
    assert (summary["status"] == "FINISHED").all()


def test_a_run_without_a_param_is_reported_with_the_fields_default(tmp_path: Path) -> None:
    # Runs logged before `optimizer` and `hidden_size` existed: TrialConfig's defaults.
    uri = small_sweep_store(tmp_path, {"q2_lr seed=1": "optimizer", "q1_mlp seed=1": "hidden_size"})
    out = tmp_path / "report"
    assert main(["report", "--tracking-uri", uri, "--out", str(out)]) == 0
    summary = pd.read_csv(out / "summary.csv").set_index("run_name")
    assert summary.loc["q2_lr seed=1", "optimizer"] == "sgd"
    assert summary.loc["q1_mlp seed=1", "hidden_size"] == 200  # typed as TrialConfig says
    assert (summary["status"] == "FINISHED").all()
    # The report says what it assumed, per run and in its notes.
    assert summary["assumed"].fillna("").to_dict() == {
        "q1_mlp seed=1": "hidden_size", "q1_mlp seed=2": "", "q2_lr seed=1": "optimizer"}
    text = (out / "report.md").read_text()
    assert "hidden_size = 200 in 1 run" in text and "optimizer = sgd in 1 run" in text


@pytest.mark.parametrize("param", ["learning_rate", "model"])
def test_a_run_without_a_required_param_is_refused(param: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    uri = small_sweep_store(tmp_path, {"q1_mlp seed=1": param})
    capsys.readouterr()  # MLflow's own lines from creating the store
    assert main(["report", "--tracking-uri", uri, "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"lacks param '{param}', which has no default" in err[0], err
    assert not (tmp_path / "report").exists()
