"""What `medgrid tune --resume` saves against starting over: a one-trial sweep in q2_reg's setting
(torch_ffn, 2 x 200 ReLU, SGD lr 0.1, batch 256, 150 epochs, no regularisation) on the full-size
synthetic set, its driver SIGKILLed once the trial has logged epoch 100, then resumed, against
the same sweep run from scratch in a fresh directory. Everything goes through the real command
line (`python -m pipeline tune`), one local Ray of one CPU, in a temporary work directory.

    python bench/resume_savings.py [--epochs 150] [--kill-at 100] [--data FILE] [--n-train N]
                                   [--checkpoint-every N] [--keep]

Steps: (a) start the sweep, poll its MLflow store until the trial's `train/loss` history reaches
--kill-at, SIGKILL the driver and every process of its session (its local Ray, its MLflow
server; nothing else, unlike `ray stop --force`);
(b) `--resume` it and time it to its exit; the trial must end FINISHED in the same MLflow run,
with each epoch 1..E exactly once in `train/loss`, `val/acc` and `epoch_time_s`, else the
script exits 1 with the reason; (c) time the same sweep from scratch in a new directory.

Prints JSON: epochs, kill_at, the epoch reached at the kill, the epoch the resumed trial
continued after (Tune's checkpoint on disk, Tune's first resumed result, medgrid's progress
line), wall seconds of the resumed and the scratch sweep (each from launch to exit, start-up
included), saved seconds (scratch - resume) and scratch / resume; then the same for training
only, from MLflow's `epoch_time_s` (the seconds in `train_epoch`, no evaluation or logging).
--data FILE: an OCTMNIST-format .npz (default: the full-size synthetic set, made in the work
directory, ~15 s); --n-train N: `medgrid tune --limit-train N` for quick runs (the store is
polled every 0.2 s: epochs much quicker than that overshoot --kill-at). On success the work
directory is removed (--keep keeps it); on failure it is kept and named.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from pipeline import synthetic
from pipeline.process_session import kill_session

SPACE = """\
name: q2_reg
description: resume_savings benchmark, q2_reg's no-regularisation variant alone
model: torch_ffn
seeds: [42]
params:
  epochs: {epochs}
  batch_size: 256
  learning_rate: 0.1
  hidden_size: 200
  layers: 2
  activation: relu
  optimizer: sgd
"""
READY_LINE = "[medgrid] sweep 'q2_reg'"  # printed once the experiment and parent run exist
KEYS = ("train/loss", "val/acc", "epoch_time_s")
POLL_S = 0.2


class BenchError(Exception):
    """The benchmark cannot go on: the reason, for stderr and exit code 1."""


@dataclass
class Sweep:
    """A work directory holding one sweep of the space, and how to launch it."""

    work: Path
    command: list[str]

    @property
    def log(self) -> Path:
        return self.work / "driver.log"

    def client(self) -> MlflowClient:
        return MlflowClient(f"sqlite:///{self.work / 'mlflow.db'}")


def make_sweep(work: Path, epochs: int, data: Path, args: argparse.Namespace) -> Sweep:
    work.mkdir(parents=True)
    (work / "space.yaml").write_text(SPACE.format(epochs=epochs))
    command = [sys.executable, "-m", "pipeline", "tune", "space.yaml", "--data", str(data),
               "--num-cpus", "1"]
    if args.n_train:
        command += ["--limit-train", str(args.n_train)]
    if args.checkpoint_every is not None:
        command += ["--checkpoint-every", str(args.checkpoint_every)]
    return Sweep(work, command)


def launch(sweep: Sweep, extra: list[str]) -> subprocess.Popen[bytes]:
    """The driver in a session of its own, so that its Ray and server can be found again."""
    with open(sweep.log, "ab") as log:
        return subprocess.Popen([*sweep.command, *extra], cwd=sweep.work, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def trial_run(client: MlflowClient) -> Any | None:
    """The sweep's one trial run, or None before it exists."""
    experiment = client.get_experiment_by_name("medgrid")
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], "tags.`medgrid.kind` = 'trial'")
    if len(runs) > 1:
        raise BenchError(f"{len(runs)} trial runs in one single-trial sweep")
    return runs[0] if runs else None


def steps(client: MlflowClient, run_id: str, key: str = "train/loss") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def wait_for_epoch(sweep: Sweep, driver: subprocess.Popen[bytes], kill_at: int,
                   timeout: float) -> tuple[str, int]:
    """Poll until the trial has logged `kill_at`; its run id and the epoch seen."""
    deadline = time.monotonic() + timeout
    client: MlflowClient | None = None
    while time.monotonic() < deadline:
        if driver.poll() is not None:
            raise BenchError(f"the sweep exited ({driver.returncode}) before epoch {kill_at}; "
                             f"see {sweep.log}")
        if client is None and READY_LINE in sweep.log.read_text(errors="replace"):
            client = sweep.client()  # only now: the driver has created the store
        run = trial_run(client) if client is not None else None
        if run is not None:
            reached = max(steps(client, run.info.run_id), default=0)
            if reached >= kill_at:
                return run.info.run_id, reached
        time.sleep(POLL_S)
    raise BenchError(f"no epoch {kill_at} within {timeout:.0f} s; see {sweep.log}")


def reap_session(session: int) -> None:
    """Kill every process left in `session` (a sweep's Ray and MLflow server)."""
    left = kill_session(session)
    if left:
        raise BenchError(f"processes {left} of the sweep's session {session} would not die")


def kill_sweep(driver: subprocess.Popen[bytes]) -> None:
    """SIGKILL the driver, then every process left in its session (its local Ray, workers)."""
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    reap_session(driver.pid)


def run_to_end(sweep: Sweep, extra: list[str], timeout: float) -> float:
    """Run the sweep to its exit; its wall seconds. `BenchError` unless it exits 0. Whatever
    it leaves running in its session is killed before the next phase."""
    start = time.monotonic()
    driver = launch(sweep, extra)
    try:
        code = driver.wait(timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{' '.join(extra) or 'the sweep'} ran past {timeout:.0f} s; "
                         f"see {sweep.log}") from None
    finally:
        if driver.poll() is None:
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait()
        wall = time.monotonic() - start
        reap_session(driver.pid)
    if code != 0:
        raise BenchError(f"`medgrid tune {' '.join(extra)}` exited {code}; see {sweep.log}")
    return wall


def checkpoint_epoch(work: Path) -> int | None:
    """The epoch of the trial's checkpoint Tune left on disk (None: no checkpoint)."""
    found = sorted(work.glob("ray_results/*/*/checkpoint_*/history.json"))
    if not found:
        return None
    return max(int(json.loads(p.read_text())["epoch"]) for p in found)


def result_lines(work: Path) -> list[dict[str, Any]]:
    """Every result Tune recorded for the trial (its result.json, one JSON object a line)."""
    lines: list[dict[str, Any]] = []
    for path in sorted(work.glob("ray_results/*/*/result.json")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines


def check_complete(client: MlflowClient, run_id: str, epochs: int, what: str) -> Any:
    """The trial's run, FINISHED with each epoch 1..E exactly once; `BenchError` otherwise."""
    run = client.get_run(run_id)
    if run.info.status != "FINISHED":
        raise BenchError(f"{what}: the trial's run {run_id} ended {run.info.status}")
    for key in KEYS:
        found = steps(client, run_id, key)
        if found != list(range(1, epochs + 1)):
            twice = sorted({s for s in found if found.count(s) > 1})
            missing = sorted(set(range(1, epochs + 1)) - set(found))
            raise BenchError(f"{what}: `{key}` of run {run_id} holds epochs {found}: "
                             f"twice {twice}, missing {missing}; expected 1..{epochs} once each")
    return run


def epoch_seconds(client: MlflowClient, run_id: str, after: int = 0) -> float:
    """The sum of `epoch_time_s` over the run's epochs after `after`."""
    return sum(m.value for m in client.get_metric_history(run_id, "epoch_time_s")
               if m.step > after)


def continued_after(sweep: Sweep, killed: dict[str, Any]) -> dict[str, int | None]:
    """The epoch the resumed trial continued after, three ways: the checkpoint Tune left on
    disk, Tune's first result after the resume (minus one), medgrid's progress line."""
    new = result_lines(sweep.work)[killed["results_before"]:]
    said = re.findall(r"continuing after epoch (\d+)", sweep.log.read_text(errors="replace"))
    return {"checkpoint_on_disk": killed["checkpoint_epoch_at_kill"],
            "tune_first_resumed_result": min(int(r["epoch"]) for r in new) - 1 if new else None,
            "progress_line": int(said[-1]) if said else None}


def killed_phase(sweep: Sweep, args: argparse.Namespace) -> dict[str, Any]:
    """(a): start, wait for --kill-at, kill; what was reached."""
    start = time.monotonic()
    driver = launch(sweep, [])
    try:
        run_id, seen = wait_for_epoch(sweep, driver, args.kill_at, args.timeout)
        elapsed = time.monotonic() - start
    finally:
        if driver.poll() is None:
            kill_sweep(driver)
        else:
            reap_session(driver.pid)
    logged = max(steps(sweep.client(), run_id), default=0)
    return {"run_id": run_id, "epoch_seen_at_kill": seen, "epoch_logged_at_kill": logged,
            "checkpoint_epoch_at_kill": checkpoint_epoch(sweep.work),
            "killed_after_s": round(elapsed, 2), "results_before": len(result_lines(sweep.work))}


def resumed_phase(sweep: Sweep, killed: dict[str, Any], args: argparse.Namespace
                  ) -> dict[str, Any]:
    """(b): `--resume` to the end; checked; from where it continued and what it took."""
    wall = run_to_end(sweep, ["--resume"], args.timeout)
    client = sweep.client()
    run = trial_run(client)
    if run is None or run.info.run_id != killed["run_id"]:
        raise BenchError(f"--resume: the trial's run is {run and run.info.run_id}, not the "
                         f"killed attempt's {killed['run_id']} (it started over?)")
    run = check_complete(client, run.info.run_id, args.epochs, "--resume")
    continued = continued_after(sweep, killed)
    after = continued["tune_first_resumed_result"]
    if after is None:
        raise BenchError(f"--resume: Tune recorded no result of the trial; see {sweep.log}")
    if after == 0:
        raise BenchError(f"--resume trained from epoch 1 (continued after: {continued})")
    logged = killed["epoch_logged_at_kill"]
    return {"wall_s": wall, "attempt": run.data.tags.get("medgrid.attempt"),
            "continued_after": continued, "epochs_trained": args.epochs - after,
            "train_s": epoch_seconds(client, run.info.run_id, after),
            "retrained_timed_by_first_attempt": max(logged - after, 0)}


def scratch_phase(sweep: Sweep, args: argparse.Namespace) -> dict[str, Any]:
    """(c): the same sweep from scratch in its own directory."""
    wall = run_to_end(sweep, [], args.timeout)
    client = sweep.client()
    run = trial_run(client)
    if run is None:
        raise BenchError("scratch: no trial run")
    check_complete(client, run.info.run_id, args.epochs, "scratch")
    return {"wall_s": wall, "train_s": epoch_seconds(client, run.info.run_id)}


def report(args: argparse.Namespace, killed: dict[str, Any], resumed: dict[str, Any],
           scratch: dict[str, Any], n_train: str) -> dict[str, Any]:
    wall_r, wall_s = resumed["wall_s"], scratch["wall_s"]
    train_r, train_s = resumed["train_s"], scratch["train_s"]
    return {
        "trial": "q2_reg (no regularisation) seed=42", "epochs": args.epochs,
        "kill_at": args.kill_at, "n_train": n_train,
        "checkpoint_every": args.checkpoint_every or "space default (1)",
        "epoch_reached_at_kill": killed["epoch_logged_at_kill"],
        "epoch_seen_when_killed": killed["epoch_seen_at_kill"],
        "killed_after_s": killed["killed_after_s"],
        "continued_after_epoch": resumed["continued_after"],
        "epochs_trained_by_resume": resumed["epochs_trained"],
        "resumed_attempt_tag": resumed["attempt"],
        "resume_wall_s": round(wall_r, 2), "scratch_wall_s": round(wall_s, 2),
        "saved_wall_s": round(wall_s - wall_r, 2), "scratch_over_resume": round(wall_s / wall_r, 3),
        "training_only": {
            "resume_s": round(train_r, 2), "scratch_s": round(train_s, 2),
            "saved_s": round(train_s - train_r, 2),
            "scratch_over_resume": round(train_s / train_r, 3) if train_r else None,
            "source": "sum of MLflow epoch_time_s (seconds in train_epoch): the scratch run's "
                      "epochs 1..E; the resumed run's epochs after the one it continued after",
            "resume_epochs_timed_by_first_attempt": resumed["retrained_timed_by_first_attempt"],
            "note": "an epoch trained again after the resume but logged before the kill keeps "
                    "the first attempt's epoch_time_s (the same computation, not logged twice)",
        },
        "checks": "resumed trial FINISHED in its own run, epochs 1..E once each (train/loss, "
                  "val/acc, epoch_time_s); scratch likewise",
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--kill-at", type=int, default=100)
    parser.add_argument("--data", type=Path, help="OCTMNIST-format .npz (default: full-size "
                        "synthetic set)")
    parser.add_argument("--n-train", type=int, help="medgrid tune --limit-train N")
    parser.add_argument("--checkpoint-every", type=int, help="medgrid tune --checkpoint-every N "
                        "(default: the space's, every epoch)")
    parser.add_argument("--timeout", type=float, default=6 * 3600.0,
                        help="seconds allowed to each phase")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if not 1 <= args.kill_at < args.epochs:
        parser.error("expected 1 <= --kill-at < --epochs")
    return args


def main() -> int:
    args = parse_args()
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    root = Path(tempfile.mkdtemp(prefix="medgrid-resume-"))
    try:
        data = (args.data or synthetic.synthesize(root / "full.npz", seed=0)).resolve()
        resumed_sweep = make_sweep(root / "resumed", args.epochs, data, args)
        killed = killed_phase(resumed_sweep, args)
        if killed["epoch_logged_at_kill"] >= args.epochs:
            print(f"resume_savings: note: the kill came after the last epoch was logged "
                  f"(epochs too quick to catch at --kill-at {args.kill_at})", file=sys.stderr)
        resumed = resumed_phase(resumed_sweep, killed, args)
        scratch = scratch_phase(make_sweep(root / "scratch", args.epochs, data, args), args)
    except BenchError as error:
        print(f"resume_savings: FAILED: {error} (work directory kept: {root})", file=sys.stderr)
        return 1
    n_train = str(args.n_train or "all")
    print(json.dumps(report(args, killed, resumed, scratch, n_train), indent=2))
    if args.keep:
        print(f"work directory kept: {root}", file=sys.stderr)
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
