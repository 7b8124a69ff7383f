"""medgrid's fixed costs against a sweep wired the way Ray Tune's and MLflow's docs wire it.

The q2_lr study (4 feed-forward trials, batch 16) on one synthetic file (40,000 training images,
`--limit-train 20000`, `--test-split full`), at 1, 3 and 10 epochs:
- medgrid: `python -m pipeline tune search_spaces/q2_lr.yaml ...` in a fresh directory (a fresh
  SQLite store), every feature on (parent and child runs, artifacts, test evaluation);
- the baseline (in this file, not in the package): a function trainable that loads its data,
  a DataLoader, `nn.Sequential`, SGD, `tune.report` per epoch, `MLflowLoggerCallback` into
  SQLite, no artifacts; run as its own process so that it pays its imports too.

The two alternate (medgrid first, then the baseline, then the other way round on the next
repeat), so machine load hits both alike; ratios are medgrid / baseline within one repeat.
medgrid's fixed costs come from its own records (MLflow run start/end times, metric timestamps,
`epoch_time_s`):
- `to_parent_run_s`: command start -> the sweep's parent run created;
- `to_first_epoch_s`: command start -> the first trial's first epoch starting (its first metric's
  timestamp less that epoch's training time and the epoch's evaluation);
- per trial `overhead_s`: its child run's duration less its epochs' `epoch_time_s` and their
  evaluations (estimated: the first epoch's metric stamp spacing, see `_trial_costs`), i.e.
  building the learner, test evaluation, tags, artifacts, figures and the run's end;
  `gap_s`: per trial, the idle time of the 2 slots between trials (worker start-up and Tune);
- `shutdown_s`: the parent run's end -> the command's exit.

    python bench/overhead.py [--epochs 1 3 10] [--repeats 1] [--quick] [--workdir DIR]
                             [--before CHECKOUT] [--warm]
`--before` also runs the medgrid of another checkout (e.g. `git archive main`) in the same
rotation, so a change is measured against what it replaced under the same load; `--warm` also
times medgrid's second sweep in one directory (the store exists: a warm start). Prints JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "search_spaces" / "q2_lr.yaml"
LEARNING_RATES = (1.0, 0.1, 0.01, 0.001)  # q2_lr's grid
FULL = {"n_train": 40_000, "limit_train": 20_000}
QUICK = {"n_train": 8_000, "limit_train": 4_000}


# ----------------------------------------------------------------------------- the baseline
def baseline_trainable(config: dict[str, Any]) -> None:
    """One q2_lr trial the docs' way: load, DataLoader, nn.Sequential, SGD, report per epoch."""
    import numpy as np
    import torch
    from ray import tune
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    arrays = np.load(config["data"])

    def split(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        x = arrays[f"{name}_images"].reshape(-1, 784).astype(np.float32) / 256
        return torch.from_numpy(x), torch.from_numpy(arrays[f"{name}_labels"].reshape(-1))

    x_train, y_train = split("train")
    keep = np.sort(np.random.default_rng(0).choice(len(y_train), config["limit_train"],
                                                   replace=False))
    x_train, y_train = x_train[keep], y_train[keep]
    (x_val, y_val), (x_test, y_test) = split("val"), split("test")
    torch.manual_seed(42)
    model = nn.Sequential(nn.Linear(784, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(),
                          nn.Linear(200, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"])
    loss_fn = nn.CrossEntropyLoss()
    loader = DataLoader(TensorDataset(x_train, y_train), batch_size=16, shuffle=True)

    def evaluate(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            logits = model(x)
        model.train()
        return float(loss_fn(logits, y)), float((logits.argmax(1) == y).float().mean())

    for epoch in range(1, config["epochs"] + 1):
        total, correct, seen = 0.0, 0, 0
        for xb, yb in loader:
            optimizer.zero_grad()
            logits = model(xb)
            loss = loss_fn(logits, yb)
            loss.backward()
            optimizer.step()
            total += float(loss) * len(yb)
            correct += int((logits.argmax(1) == yb).sum())
            seen += len(yb)
        val_loss, val_acc = evaluate(x_val, y_val)
        metrics = {"train_loss": total / seen, "train_acc": correct / seen,
                   "val_loss": val_loss, "val_acc": val_acc}
        if epoch == config["epochs"]:
            metrics["test_acc"] = evaluate(x_test, y_test)[1]
        tune.report(metrics)


def run_baseline(data: Path, epochs: int, limit_train: int, work: Path) -> None:
    """The baseline's whole sweep (called in a process of its own by `_timed_baseline`)."""
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    space = {"lr": tune.grid_search(list(LEARNING_RATES)), "data": str(data), "epochs": epochs,
             "limit_train": limit_train}
    callback = MLflowLoggerCallback(tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
                                    experiment_name="baseline", save_artifact=False)
    tuner = tune.Tuner(tune.with_resources(baseline_trainable, {"cpu": 1}), param_space=space,
                       tune_config=tune.TuneConfig(metric="val_acc", mode="max"),
                       run_config=tune.RunConfig(storage_path=str(work / "ray_results"),
                                                 callbacks=[callback], verbose=0))
    results = tuner.fit()
    if results.errors:
        raise SystemExit(f"baseline: {len(results.errors)} trials failed: {results.errors[0]}")


# ----------------------------------------------------------------------------- timing
def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(root), "RAY_DEDUP_LOGS": "1"}


def _timed(command: list[str], work: Path, log_name: str, root: Path = ROOT
           ) -> tuple[float, float, float]:
    """(start epoch seconds, end epoch seconds, wall seconds) of `command` run in `work`."""
    start, clock = time.time(), time.perf_counter()
    with open(work / log_name, "w") as log:
        done = subprocess.run(command, cwd=work, stdout=log, stderr=subprocess.STDOUT,
                              env=_env(root))
    wall = time.perf_counter() - clock
    if done.returncode != 0:
        raise SystemExit(f"{command[:4]} exited {done.returncode}; see {work / log_name}")
    return start, time.time(), wall


def timed_medgrid(data: Path, epochs: int, limit_train: int, work: Path, root: Path = ROOT,
                  warm: bool = False) -> dict[str, Any]:
    """One `medgrid tune` of q2_lr (the checkout at `root`) in a fresh directory (`warm`: the
    second of two there, the first untimed); its wall time and fixed costs."""
    work.mkdir(parents=True)
    command = [sys.executable, "-m", "pipeline", "tune", str(SPACE), "--data", str(data),
               "--limit-train", str(limit_train), "--test-split", "full", "--epochs",
               str(epochs), "--experiment", "bench"]
    if warm:  # a store, an experiment and an earlier sweep already there
        _timed(command, work, "tune-first.log", root)
    start, end, wall = _timed(command, work, "tune.log", root)
    return {"wall_s": round(wall, 2), **fixed_costs(work / "mlflow.db", start, end)}


def timed_baseline(data: Path, epochs: int, limit_train: int, work: Path) -> dict[str, Any]:
    """The baseline's sweep in a process of its own, in a fresh directory; its wall time."""
    work.mkdir(parents=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--baseline-run", str(work),
               "--data", str(data), "--epochs", str(epochs), "--limit-train", str(limit_train)]
    return {"wall_s": round(_timed(command, work, "baseline.log")[2], 2)}


def fixed_costs(db: Path, start: float, end: float) -> dict[str, Any]:
    """medgrid's fixed costs, read from the runs it recorded (see the module docstring)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("bench")
    runs = client.search_runs([experiment.experiment_id], max_results=100,
                              order_by=["attributes.start_time DESC"])
    parent = next(r for r in runs if r.data.tags.get("medgrid.kind") == "sweep")  # the latest
    trials = [_trial_costs(client, r) for r in runs
              if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    trials.sort(key=lambda t: t["start"])
    first_epoch = min(t["first_epoch_start"] for t in trials)
    busy = sum(t["end"] - t["start"] for t in trials)
    span = max(t["end"] for t in trials) - min(t["start"] for t in trials)
    slots = 2  # q2_lr's 4 trials on this machine's 2 CPUs
    return {
        "to_parent_run_s": round(parent.info.start_time / 1000 - start, 2),
        "to_first_epoch_s": round(first_epoch - start, 2),
        "trial_overhead_s": [t["overhead_s"] for t in trials],
        "trial_overhead_mean_s": round(sum(t["overhead_s"] for t in trials) / len(trials), 2),
        "trial_gap_mean_s": round(max(0.0, slots * span - busy) / len(trials), 2),
        "trial_run_s": [round(t["end"] - t["start"], 2) for t in trials],
        "training_s": round(sum(t["epochs_s"] for t in trials), 2),
        "shutdown_s": round(end - parent.info.end_time / 1000, 2),
    }


def _trial_costs(client: Any, run: Any) -> dict[str, Any]:
    """One child run's start, end, training seconds and overhead. Each epoch's metrics are
    stamped after its evaluation; an epoch's evaluation is estimated as the spacing of two
    consecutive stamps less the later epoch's `epoch_time_s` (0 with one epoch)."""
    history = sorted(client.get_metric_history(run.info.run_id, "epoch_time_s"),
                     key=lambda m: m.step)
    stamps = [m.timestamp / 1000 for m in history]
    spacing = [b - a - m.value
               for a, b, m in zip(stamps, stamps[1:], history[1:], strict=False)]
    evaluation = max(0.0, min(spacing)) if spacing else 0.0
    epochs_s = sum(m.value for m in history) + evaluation * len(history)
    start, end = run.info.start_time / 1000, run.info.end_time / 1000
    return {"start": start, "end": end, "epochs_s": epochs_s,
            "first_epoch_start": stamps[0] - history[0].value - evaluation,
            "overhead_s": round(end - start - epochs_s, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 3, 10])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="8,000 training images (4,000 "
                        "used), 1 epoch: a smoke run")
    parser.add_argument("--workdir", type=Path, help="where the runs write (default: temp)")
    parser.add_argument("--before", type=Path, help="another medgrid checkout, run alongside")
    parser.add_argument("--warm", action="store_true", help="also time medgrid's second run "
                        "in one directory (its store and experiment exist)")
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--limit-train", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--baseline-run", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_run:  # the baseline's own process (see timed_baseline)
        run_baseline(args.data, args.epochs[0], args.limit_train, args.baseline_run)
        return
    sizes = QUICK if args.quick else FULL
    epochs_list = [1] if args.quick and args.epochs == [1, 3, 10] else args.epochs
    work = args.workdir or Path(tempfile.mkdtemp(prefix="medgrid-overhead-"))
    work.mkdir(parents=True, exist_ok=True)
    from pipeline import synthetic

    data = synthetic.synthesize(work / "synthetic.npz", n_train=sizes["n_train"], seed=0)
    runs: list[tuple[str, Callable[..., dict[str, Any]]]] = [
        ("medgrid", timed_medgrid), ("baseline", timed_baseline)]
    if args.before:
        runs.append(("medgrid_before", functools.partial(timed_medgrid, root=args.before)))
    if args.warm:
        runs.append(("medgrid_warm", functools.partial(timed_medgrid, warm=True)))
    rows = []
    for epochs in epochs_list:
        for repeat in range(args.repeats):
            here = work / f"e{epochs}-r{repeat}"
            order = runs if repeat % 2 == 0 else runs[::-1]
            measured = {who: run(data, epochs, sizes["limit_train"], here / who)
                        for who, run in order}
            base = measured["baseline"]["wall_s"]
            row: dict[str, Any] = {"epochs": epochs, "repeat": repeat,
                                   "order": [who for who, _ in order], "goal": "ratio <= 0.8"}
            for who, result in measured.items():
                row[f"{who}_wall_s"] = result["wall_s"]
                if who != "baseline":
                    row[f"{who}_ratio"] = round(result["wall_s"] / base, 3)
                    row[f"{who}_fixed_costs"] = {k: v for k, v in result.items()
                                                 if k != "wall_s"}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)  # progress, as it goes
    print(json.dumps({"n_train_file": sizes["n_train"], "limit_train": sizes["limit_train"],
                      "cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg(),
                      "workdir": str(work), "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
