"""Seconds for `medgrid report` on a sweep of 1,000 trial runs (goal: under 30 s).

Builds a temporary SQLite store with one sweep parent and --runs child runs shaped like the
homework's sweep (search_spaces/hw1.yaml repeated over seeds; 20 epochs of the six per-epoch
metrics each, written with log_batch), then times the command as a user runs it, in a fresh
process: once with --no-log, and once logging the report to the parent run through the private
server that a store written by `medgrid tune` needs (its artifacts sit behind mlflow-artifacts:/).
Also times reading the runs alone (one paged search_runs) in this process.

Prints one JSON object. Run: .venv/bin/python bench/report_speed.py [--runs 1000] [--epochs 20]
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from pipeline.config import PlannedTrial, expand, load_space
from pipeline.report.runs import find_sweep, read_trials
from pipeline.tracking.client import open_store

GOAL_S = 30.0
SPACE = Path(__file__).resolve().parent.parent / "search_spaces" / "hw1.yaml"


def planned(runs: int) -> list[PlannedTrial]:
    """The homework's trials, seed after seed, cut at `runs`."""
    base = expand(load_space(SPACE))
    trials = []
    for seed in itertools.count(1):
        for trial in base:
            config = trial.config.model_copy(update={"seed": seed})
            name = trial.name.rsplit(" seed=", 1)[0] + f" seed={seed}"
            trials.append(PlannedTrial(config, name))
            if len(trials) == runs:
                return trials
    raise AssertionError("unreachable")


def build_store(uri: str, runs: int, epochs: int) -> str:
    """One sweep parent and `runs` finished children; returns the parent's run id."""
    client = MlflowClient(uri)
    # The location a store written through `medgrid tune`'s server has.
    experiment_id = client.create_experiment("medgrid", artifact_location="mlflow-artifacts:/1")
    parent = client.create_run(experiment_id, run_name="sweep bench", tags={
        "medgrid.kind": "sweep", "medgrid.sweep": "bench", "dataset": "synthetic",
        "test_split": "hw1"}).info.run_id
    client.log_batch(parent, params=[Param("n_trials", str(runs)), Param("n_val", "10832"),
                                     Param("n_test", "529"), Param("n_train", "97477")])
    rng = random.Random(0)
    for trial in planned(runs):
        config = trial.config
        run_id = client.create_run(experiment_id, run_name=trial.name, tags={
            "mlflow.parentRunId": parent, "medgrid.kind": "trial", "study": config.study,
            "seed": str(config.seed), "diverged": "false"}).info.run_id
        metrics = [Metric(key, rng.random(), 0, step) for step in range(1, epochs + 1)
                   for key in ("train/loss", "train/loss_sum", "train/acc", "val/acc",
                               "val/loss", "epoch_time_s")]
        metrics.append(Metric("test/acc", rng.random(), 0, epochs))
        params = [Param(k, str(v)) for k, v in config.model_dump().items()]
        client.log_batch(run_id, metrics=metrics, params=params)
        client.set_terminated(run_id, "FINISHED")
    client.set_terminated(parent, "FINISHED")
    return parent


def time_command(work: Path, uri: str, *extra: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline", "report", "--tracking-uri", uri,
                    "--out", str(work / "report_out"), *extra], cwd=work, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="medgrid-bench-") as tmp:
        work = Path(tmp)
        uri = f"sqlite:///{work / 'mlflow.db'}"
        start = time.perf_counter()
        build_store(uri, args.runs, args.epochs)
        setup_s = time.perf_counter() - start
        start = time.perf_counter()
        client = open_store(uri)
        trials = read_trials(client, find_sweep(client, "medgrid", None))
        read_s = time.perf_counter() - start
        no_log_s = time_command(work, uri, "--no-log")
        logged_s = time_command(work, uri)
        tables = len(list((work / "report_out").glob("table*.csv")))
    print(json.dumps({
        "runs": len(trials), "epochs": args.epochs, "setup_s": round(setup_s, 1),
        "read_runs_s": round(read_s, 2), "report_no_log_s": round(no_log_s, 2),
        "report_logged_s": round(logged_s, 2), "tables": tables, "goal_s": GOAL_S,
        "within_goal": max(no_log_s, logged_s) < GOAL_S,
    }, indent=2))


if __name__ == "__main__":
    main()
