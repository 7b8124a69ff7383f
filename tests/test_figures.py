"""A trial's figures are drawn after it reports: its run ends FINISHED with its metrics and data
files first, the figures follow from a background thread of the worker, and a worker that stops
waits for them. The trainable is driven here as Tune drives it (setup, step, cleanup) over a real
MLflow store; a fresh interpreter shows that matplotlib is not imported before the first epoch."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import ray
from mlflow.tracking import MlflowClient

from pipeline import figures
from pipeline import tune as tuning
from pipeline.data import Splits
from pipeline.plan import NAME_KEY
from pipeline.sweep import SweepOptions, plan_sweep
from pipeline.tracking import runs
from pipeline.tracking.client import TrackingClient
from pipeline.tracking.names import FIGURES_ERROR_TAG, FIGURES_TAG
from pipeline.trial import TrialSession

pytestmark = pytest.mark.slow

DATA_FILES = {"history.csv", "config.yaml", "weights.npz", "confusion_matrix.csv",
              "val_correct.npy"}
FIGURES = {"curves.png", "confusion_matrix.png"}
SPACE = "name: one\nmodel: numpy_logreg\nparams: {epochs: %d, learning_rate: 0.01}\n"


def trainable(work: Path, splits: Splits, epochs: int = 1, ray_node: bool = True
              ) -> tuple[tuning.MedgridTrainable, MlflowClient]:
    """A trial's trainable as Tune builds it, logging to a SQLite store in `work` (tagged with
    its Ray node, from the `local_ray` fixture; or `ray_node=False`: a stand-in, no Ray)."""
    from ray.tune.result import TRIAL_INFO

    if not ray_node:
        tuning._node_label = lambda: "no-ray@127.0.0.1"
    assert ray_node == ray.is_initialized(), "a test with a Ray node asks for `local_ray`"
    (work / "one.yaml").write_text(SPACE % epochs)
    plan = plan_sweep(work / "one.yaml", SweepOptions()).plan
    uri = f"sqlite:///{work / 'mlflow.db'}"
    client = TrackingClient(uri)
    experiment = runs.ensure_experiment(client, "medgrid")
    target = tuning.TrackingTarget(uri, experiment,
                                   runs.start_sweep_run(client, experiment, "one", {}, {}))

    class Direct(tuning.MedgridTrainable):
        def setup(self, config: dict[str, Any]) -> None:
            super().setup(config, splits, plan, target, TrialSession)

    info = type("Info", (), {"trial_name": str(plan.points[0][NAME_KEY]), "trial_id": "t0"})()
    return Direct({**plan.points[0], TRIAL_INFO: info}), MlflowClient(uri)


def only_run(client: MlflowClient) -> Any:
    experiment = client.get_experiment_by_name("medgrid")
    (run,) = client.search_runs([experiment.experiment_id], "tags.`medgrid.kind` = 'trial'")
    return run


def artifact_names(client: MlflowClient, run_id: str) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id)}


@pytest.mark.usefixtures("local_ray")  # the trial tags its Ray node
def test_the_run_finishes_before_its_figures_and_a_stopping_worker_waits_for_them(
        tmp_path: Path, tiny_splits: Splits, monkeypatch: pytest.MonkeyPatch) -> None:
    release, drawing = threading.Event(), threading.Event()
    real = figures.write_trial_figures

    def held(*args: Any) -> list[Path]:  # the figures take as long as the test says
        drawing.set()
        assert release.wait(60)
        return real(*args)

    monkeypatch.setattr(figures, "write_trial_figures", held)
    trial, client = trainable(tmp_path, tiny_splits)
    assert trial.step()["done"]  # the trial has reported to Tune
    assert drawing.wait(30)  # ... and its figures are being drawn, in another thread
    run = only_run(client)
    assert run.info.status == "FINISHED"
    assert "test/acc" in run.data.metrics
    assert artifact_names(client, run.info.run_id) == DATA_FILES  # no figure yet
    release.set()
    trial.cleanup()  # Tune stops the actor: the figures in progress are waited for
    assert artifact_names(client, run.info.run_id) == DATA_FILES | FIGURES
    assert FIGURES_ERROR_TAG not in only_run(client).data.tags
    assert only_run(client).data.tags[FIGURES_TAG] == "drawn"


@pytest.mark.usefixtures("local_ray")  # the trial tags its Ray node
def test_figures_that_fail_cost_the_figures_only_and_say_why_on_the_run(
        tmp_path: Path, tiny_splits: Splits, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> list[Path]:
        raise RuntimeError("no font cache\nsecond line")

    monkeypatch.setattr(figures, "write_trial_figures", broken)
    trial, client = trainable(tmp_path, tiny_splits)
    assert trial.step()["done"]
    trial.cleanup()
    run = only_run(client)
    assert run.info.status == "FINISHED"
    assert artifact_names(client, run.info.run_id) == DATA_FILES
    assert run.data.tags[FIGURES_ERROR_TAG] == "RuntimeError: no font cache"
    assert run.data.tags[FIGURES_TAG] == "failed"  # not pending: the driver leaves it alone


@pytest.mark.usefixtures("local_ray")  # the trial tags its Ray node
@pytest.mark.parametrize("diverges", [False, True], ids=["finished", "diverged"])
def test_figures_a_worker_never_drew_are_drawn_by_the_driver(
        tmp_path: Path, tiny_splits: Splits, monkeypatch: pytest.MonkeyPatch,
        diverges: bool) -> None:
    """A worker that ends between its trial's end and the drawing (a node lost, a SIGKILL)
    left a FINISHED run without figures and nothing saying so. The run says "pending" until
    its figures are up, and the driver draws what is still pending from the run's files."""
    def worker_gone(*args: Any) -> None:  # the background thread never gets to draw
        return None

    monkeypatch.setattr(figures, "render_and_upload", worker_gone)
    if diverges:  # float32 overflows at this rate (test_numpy_models): curves, no matrix
        monkeypatch.setattr(tuning.SweepPlan, "trial_config", _diverging(
            tuning.SweepPlan.trial_config))
    trial, client = trainable(tmp_path, tiny_splits)
    assert trial.step()["done"]
    trial.cleanup()
    run = only_run(client)
    assert run.info.status == "FINISHED" and run.data.tags[FIGURES_TAG] == "pending"
    files = DATA_FILES - ({"confusion_matrix.csv", "val_correct.npy"} if diverges else set())
    assert artifact_names(client, run.info.run_id) == files
    assert (run.data.tags["diverged"] == "true") == diverges
    tracking = TrackingClient(client.tracking_uri)
    parent = run.data.tags["mlflow.parentRunId"]
    assert figures.redraw_pending(tracking, run.info.experiment_id, parent) == 1
    drawn = files | ({"curves.png"} if diverges else FIGURES)
    assert artifact_names(client, run.info.run_id) == drawn
    assert only_run(client).data.tags[FIGURES_TAG] == "drawn"
    assert figures.redraw_pending(tracking, run.info.experiment_id, parent) == 0  # once


def _diverging(trial_config: Any) -> Any:
    def config(plan: Any, values: dict[str, Any]) -> Any:
        return trial_config(plan, values).model_copy(
            update={"learning_rate": 1e38, "dtype": "float32", "epochs": 3})
    return config


# A worker's life in a fresh interpreter: matplotlib must stay unimported through setup and the
# first trial's training (it costs every worker a fraction of a second before its first epoch),
# and be there once the figures are drawn.
WORKER = """
import json, sys
from pathlib import Path
from pipeline.data import load_splits
from tests.test_figures import trainable
trial, client = trainable(Path(sys.argv[1]), load_splits(Path(sys.argv[2])), epochs=2,
                          ray_node=False)
seen = {"after_setup": "matplotlib" in sys.modules}
trial.step()
seen["after_first_epoch"] = "matplotlib" in sys.modules
assert trial.step()["done"]
trial.cleanup()
seen["after_stop"] = "matplotlib" in sys.modules
print(json.dumps(seen))
"""


def test_a_worker_imports_matplotlib_only_to_draw_figures(tmp_path: Path,
                                                          tiny_npz: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", WORKER, str(tmp_path), str(tiny_npz)],
                          cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"after_setup": False, "after_first_epoch": False, "after_stop": True}
