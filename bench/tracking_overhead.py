"""What MLflow tracking costs a trial: a 20-epoch batch-1024 feed-forward trial (the homework's
q2_batch setting) on the full-size synthetic set, with every tracking call a trial makes in
`medgrid tune` (child run, per-epoch batches, artifacts, end) timed apart from training.

    python bench/tracking_overhead.py [--epochs 20] [--data FILE]
Prints JSON: training seconds, tracking seconds, and tracking as a percentage of training.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from pipeline import synthetic
from pipeline.artifacts import write_trial_artifacts
from pipeline.config import TrialConfig
from pipeline.data import load_splits
from pipeline.tracking import runs as tracking
from pipeline.tracking.server import LocalTrackingServer
from pipeline.train import EpochRecord
from pipeline.trial import run_trial


class Stopwatch:
    """Sums the seconds spent inside `with watch:` blocks."""

    def __init__(self) -> None:
        self.total = 0.0

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.total += time.perf_counter() - self._start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--data", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    work = Path(tempfile.mkdtemp(prefix="medgrid-overhead-"))
    data_file = args.data or synthetic.synthesize(work / "full.npz", seed=0)
    data = load_splits(data_file)
    config = TrialConfig(study="q2_batch", model="torch_ffn", epochs=args.epochs,
                         learning_rate=0.1, batch_size=1024, hidden_size=200, layers=2)
    name = "q2_batch batch=1024 seed=42"
    watch = Stopwatch()
    with LocalTrackingServer(f"sqlite:///{work / 'mlflow.db'}", work / "mlruns",
                             work / "server.log") as server:
        client = MlflowClient(server.url)
        experiment = tracking.ensure_experiment(client, "overhead")
        parent = tracking.start_sweep_run(client, experiment, "overhead", {}, {})
        start = time.perf_counter()
        with watch:
            run = tracking.TrialRun(client, experiment, parent, name,
                                    params=config.model_dump(), tags={"study": "q2_batch"})

        def on_epoch(record: EpochRecord) -> None:
            with watch:
                run.log_epoch(record.epoch, record.metrics)

        result = run_trial(config, data, on_epoch)
        with watch:
            run.log_epoch(args.epochs, {"test/acc": result.test_acc})
            run.set_tags({"diverged": str(result.diverged).lower()})
            with tempfile.TemporaryDirectory() as tmp:
                write_trial_artifacts(result, name, Path(tmp))
                run.log_artifacts(Path(tmp))
            run.finish()
        total = time.perf_counter() - start
    training = total - watch.total
    print(json.dumps({
        "trial": name, "epochs": args.epochs, "n_train": data.identity.n_train,
        "training_s": round(training, 2), "tracking_s": round(watch.total, 3),
        "tracking_pct_of_training": round(100 * watch.total / training, 2),
    }, indent=2))


if __name__ == "__main__":
    main()
