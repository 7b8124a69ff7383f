"""The whole homework grid (search_spaces/hw1.yaml) at full epochs on the full-size synthetic
set, through `medgrid tune` on this machine. Prints JSON: wall time of the sweep, the sum of the
trials' own durations (what running them one after another would cost), and per-trial times.

    python bench/sweep_full.py [--space search_spaces/hw1.yaml] [--epochs N] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]


def trial_durations(db: Path, experiment: str) -> dict[str, float]:
    """Seconds from start to end of each FINISHED child run, by run name."""
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`medgrid.kind` = 'trial'",
                              max_results=1000)
    return {r.info.run_name: (r.info.end_time - r.info.start_time) / 1000 for r in runs
            if r.info.status == "FINISHED"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", type=Path, default=ROOT / "search_spaces" / "hw1.yaml")
    parser.add_argument("--epochs", type=int, help="cap epochs (default: full)")
    parser.add_argument("--workdir", type=Path, help="where the sweep writes (default: temp)")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="medgrid-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "synthetic_full.npz"
    if not data.exists():
        subprocess.run([sys.executable, "-m", "pipeline", "data", "synth", "--out", str(data)],
                       check=True)
    command = [sys.executable, "-m", "pipeline", "tune", str(args.space.resolve()), "--data",
               str(data), "--experiment", "bench"]
    if args.epochs:
        command += ["--epochs", str(args.epochs)]
    start = time.perf_counter()
    with open(work / "tune.log", "w") as log:
        done = subprocess.run(command, cwd=work, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "RAY_DEDUP_LOGS": "1"})
    wall = time.perf_counter() - start
    durations = trial_durations(work / "mlflow.db", "bench")
    sequential = sum(durations.values())
    print(json.dumps({
        "space": str(args.space), "exit_code": done.returncode, "cpus": os.cpu_count(),
        "sweep_wall_s": round(wall, 1), "sweep_wall_min": round(wall / 60, 2),
        "trials_finished": len(durations),
        "sum_of_trial_s": round(sequential, 1),
        "parallel_speedup": round(sequential / wall, 2) if wall else None,
        "per_trial_s": {k: round(v, 1) for k, v in sorted(durations.items())},
        "log": str(work / "tune.log"),
    }, indent=2))


if __name__ == "__main__":
    main()
