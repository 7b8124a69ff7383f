"""Shared fixtures and helpers: a tiny synthetic OCTMNIST-format file and its preprocessed
splits; a small finished sweep in an MLflow store."""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from pipeline.config import expand, load_space
from pipeline.data import Splits, load_splits
from pipeline.synthetic import synthesize

# The checkout under test first on the path of every process a test starts (`python -m
# pipeline` in a temporary directory, Ray's workers): else an installed medgrid (e.g. the
# editable install of another checkout) would answer for it.
ROOT = Path(__file__).resolve().parents[1]
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT),
                                                         os.environ.get("PYTHONPATH")]))

# A shell without job control starts a background command (`make test &`, some CI runners)
# with SIGINT ignored, and every process it starts inherits that: the tests' Ctrl-C to a
# `medgrid` subprocess would then be ignored and the test hang. Handling SIGINT here as Python
# does by default gives every child the terminal's usual Ctrl-C again.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

@pytest.fixture
def local_ray() -> Iterator[None]:
    """A local Ray for a test that uses Ray itself, quiet (its workers' output not streamed, as
    in a sweep) and shut down after the test. Left running, it was joined by every later
    in-process sweep of the session, which then ran on its CPUs, not the ones it asked for, and
    streamed its workers' output (seen printed after pytest's summary)."""
    import ray

    from pipeline import tune as tuning

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        tuning.shutdown_ray()


# Big enough for the homework's 529-image test subset (182/55/42/250 of classes 0-3).
TINY_SIZES = {"n_train": 400, "n_val": 100, "n_test": 1000}


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic file in MedMNIST's npz format (train 400, val 100, test 1000)."""
    return synthesize(tmp_path_factory.mktemp("data") / "tiny.npz", seed=0, **TINY_SIZES)


@pytest.fixture(scope="session")
def tiny_splits(tiny_npz: Path) -> Splits:
    """`load_splits(tiny_npz)`: the homework's preprocessing and 529-image test subset."""
    return load_splits(tiny_npz)


# Two studies (numpy MLP, two seeds; torch FFN, one), 2 epochs each: three trial runs.
SMALL_SWEEP = {
    "mlp.yaml": "name: q1_mlp\nmodel: numpy_mlp\nseeds: [1, 2]\n"
                "params: {epochs: 2, learning_rate: 0.001}\n",
    "ffn.yaml": "name: q2_lr\nmodel: torch_ffn\nseeds: [1]\n"
                "params: {epochs: 2, learning_rate: 0.1}\n",
    "sweep.yaml": "name: legacy\ninclude: [mlp.yaml, ffn.yaml]\n",
}


def small_sweep_store(work: Path, drop: dict[str, str] | None = None) -> str:
    """A finished sweep written with MLflow's client into `work/mlflow.db`, as `medgrid tune`
    writes it: a parent run and one child run per planned trial, each logging its config as
    params but for the param named in `drop` (run name -> param); returns the tracking URI."""
    from mlflow.entities import Metric, Param  # here: the fast tests never import MLflow
    from mlflow.tracking import MlflowClient

    drop = drop or {}
    for name, text in SMALL_SWEEP.items():
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


def _has_runs(db: Path) -> bool:
    """Whether the SQLite store `db` holds a run yet (read-only; so its tables are complete)."""
    if not db.exists():
        return False
    try:
        with closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5)) as conn:
            return conn.execute("SELECT 1 FROM runs LIMIT 1").fetchone() is not None
    except sqlite3.Error:  # no tables yet, or being created
        return False


def trial_runs(db: Path, experiment: str = "medgrid") -> list:
    """The trial runs of `experiment` in the SQLite store `db`, read straight from the store
    with MLflow's own client (not through medgrid), as MLflow's run objects."""
    from mlflow.tracking import MlflowClient

    if not _has_runs(db):
        # MLflow's client would create the store's tables here, racing the sweep's own
        # creation of them (its server then fails to migrate the half-made schema).
        return []
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return list(client.search_runs([exp.experiment_id], "tags.`medgrid.kind` = 'trial'"))


def steps(db: Path, run_id: str, key: str = "train/loss") -> list[int]:
    """The steps (epochs) at which run `run_id` logged `key`, in the order MLflow returns them."""
    from mlflow.tracking import MlflowClient

    return [m.step for m in MlflowClient(f"sqlite:///{db}").get_metric_history(run_id, key)]
