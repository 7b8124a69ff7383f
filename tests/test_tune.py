"""`medgrid tune` end to end: real local Ray, real MLflow store behind a private server."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray.cloudpickle as cloudpickle
from mlflow.tracking import MlflowClient

from pipeline.cli import main
from pipeline.config import TrialConfig
from pipeline.data import Splits
from pipeline.sweep import SweepOptions, run_sweep
from pipeline.tracking_server import LocalTrackingServer
from pipeline.trial import EpochCallback, TrialResult, run_trial

pytestmark = pytest.mark.slow

SWEEP = {
    "linear.yaml": """\
name: linear
model: numpy_logreg
params: {epochs: 3, learning_rate: [0.01, 0.001]}
""",
    "net.yaml": """\
name: net
model: torch_ffn
params: {epochs: 3, batch_size: 32, hidden_size: 16, layers: 2, learning_rate: [0.05, 1.0e6]}
""",
    "both.yaml": "name: both\ninclude: [linear.yaml, net.yaml]\n",
}
TRIALS = {"linear lr=0.01 seed=42", "linear lr=0.001 seed=42", "net lr=0.05 seed=42",
          "net lr=1000000.0 seed=42"}
ARTIFACTS = {"curves.png", "confusion_matrix.csv", "confusion_matrix.png", "config.yaml",
             "weights.npz", "history.csv"}


def write_space(directory: Path) -> Path:
    for name, text in SWEEP.items():
        (directory / name).write_text(text)
    return directory / "both.yaml"


def children(client: MlflowClient, experiment: str = "medgrid") -> list:
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`medgrid.kind` = 'trial'")
    return list(runs)


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory, tiny_npz: Path) -> Iterator[tuple[Path, MlflowClient]]:
    """One sweep through the CLI, then a tracking server over its store for reading back."""
    work = tmp_path_factory.mktemp("sweep")
    space = write_space(work)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        code = main(["tune", str(space), "--data", str(tiny_npz), "--num-cpus", "2",
                     "--max-concurrent", "2"])
    assert code == 0
    server = LocalTrackingServer(f"sqlite:///{work / 'mlflow.db'}", work / "mlruns",
                                 work / "server.log")
    with server:
        yield work, MlflowClient(server.url)


def test_one_finished_child_run_per_trial(finished_sweep) -> None:
    _, client = finished_sweep
    runs = children(client)
    assert sorted(r.info.run_name for r in runs) == sorted(TRIALS)
    assert {r.info.status for r in runs} == {"FINISHED"}
    parents = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert len(parents) == 1
    parent = client.get_run(parents.pop())
    assert parent.info.status == "FINISHED"
    for tag in ("space_sha256", "git_commit", "dataset", "dataset_md5", "test_split",
                "ray_address", "medgrid_version"):
        assert parent.data.tags.get(tag), tag


def test_child_runs_carry_config_metrics_and_tags(finished_sweep) -> None:
    _, client = finished_sweep
    for run in children(client):
        params = run.data.params
        assert set(TrialConfig.model_fields) <= set(params)
        epochs = int(params["epochs"])
        tags = run.data.tags
        assert tags["study"] in ("linear", "net") and tags["seed"] == "42" and tags["node"]
        history = client.get_metric_history(run.info.run_id, "train/loss")
        assert [m.step for m in history] == list(range(1, len(history) + 1))
        if tags["diverged"] == "false":
            assert len(history) == epochs
            for key in ("train/acc", "val/acc", "val/loss", "epoch_time_s"):
                assert len(client.get_metric_history(run.info.run_id, key)) == epochs
        assert 0.0 <= run.data.metrics["test/acc"] <= 1.0


def test_diverging_trial_is_flagged_and_the_sweep_goes_on(finished_sweep) -> None:
    _, client = finished_sweep
    by_name = {r.info.run_name: r for r in children(client)}
    assert by_name["net lr=1000000.0 seed=42"].data.tags["diverged"] == "true"
    assert by_name["net lr=0.05 seed=42"].data.tags["diverged"] == "false"


def test_every_child_run_has_its_artifacts(finished_sweep, tmp_path: Path) -> None:
    _, client = finished_sweep
    for run in children(client):
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert ARTIFACTS <= names, run.info.run_name
    run = children(client)[0]
    local = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
    assert f"learning_rate: {run.data.params['learning_rate']}" in Path(local).read_text()


def test_ray_results_go_to_the_storage_directory(finished_sweep) -> None:
    work, _ = finished_sweep
    assert any((work / "ray_results").iterdir())


def _fail_net(config: TrialConfig, data: Splits, on_epoch: EpochCallback) -> TrialResult:
    if config.study == "net":
        raise RuntimeError(f"injected failure in {config.study}")
    return run_trial(config, data, on_epoch)


def test_raising_trial_fails_in_mlflow_is_retried_and_the_sweep_goes_on(
        tmp_path: Path, tiny_npz: Path, monkeypatch) -> None:
    # Ray workers cannot import this test module: ship _fail_net by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.chdir(tmp_path)
    space = write_space(tmp_path)
    options = SweepOptions(data=tiny_npz, num_cpus=2, max_failures=1, experiment="faults")
    assert run_sweep(space, options, trial_fn=_fail_net) == 1
    with LocalTrackingServer(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "mlruns",
                             tmp_path / "server.log") as server:
        client = MlflowClient(server.url)
        runs = {r.info.run_name: r for r in children(client, "faults")}
        assert set(runs) == TRIALS  # one visible run per trial, retries included
        for name, run in runs.items():
            if name.startswith("net"):
                assert run.info.status == "FAILED"
                assert "injected failure" in run.data.tags["medgrid.error"]
                assert run.data.tags["medgrid.attempt"] == "2"  # Ray retried once
            else:
                assert run.info.status == "FINISHED"
        parent = client.get_run(next(iter(runs.values())).data.tags["mlflow.parentRunId"])
        assert parent.info.status == "FAILED"
