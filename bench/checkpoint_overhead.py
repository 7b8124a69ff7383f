"""What checkpointing costs a trial: a 20-epoch batch-1024 feed-forward trial (the homework's
q2_batch setting: torch_ffn, 2 x 200 ReLU, SGD lr 0.1) on the full-size synthetic set,
checkpointed after every epoch the way `medgrid tune` does it (its default checkpoint_every: 1).

    python bench/checkpoint_overhead.py [--epochs 20] [--data FILE] [--n-train N] [--repeats 2]

Each checkpoint is what `MedgridTrainable.save_checkpoint` plus Ray Tune do with it:
`session.checkpoint().save(tmp)` and the small run-id JSON into a fresh temporary directory,
copied into the trial's `checkpoint_00000N` directory, the temporary directory removed, and the
previous checkpoint deleted (Tune's num_to_keep=1). Not counted: Tune's experiment-state snapshot,
which the driver writes in another process.

Two measurements, both in one process on the same data, after an untimed one-epoch warm-up:
- headline, a stopwatch: the seconds spent inside the checkpoint calls against the rest of the
  same runs (training, evaluation, the final test): `checkpoint_pct` = checkpoint_s / training_s.
- cross-check: wall seconds of whole runs with checkpoints against runs without, alternated
  (with, without, without, with, ...) so drift on a shared machine falls on both sides. Noisy: a
  few percent of wall time is within the run-to-run spread of a busy VM.

Prints JSON: epochs, n_train, per-run training and checkpoint seconds, checkpoint_pct, seconds
per checkpoint call, bytes per checkpoint (by file, at the last epoch), and the cross-check.
--n-train subsamples the training set (seeded, as `medgrid tune --limit-train`) for quick runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import synthetic
from pipeline.config import TrialConfig
from pipeline.data import Splits, load_splits, subsample_train
from pipeline.trial import TrialSession
from pipeline.tune import RUN_ID_FILE

TARGET_PCT = 3.0
RUN_ID = "0123456789abcdef0123456789abcdef"  # an MLflow run id's length


@dataclass
class RunTimes:
    """One run: wall seconds, and per checkpoint the seconds of medgrid's save and of the
    Tune-side file handling (copy into checkpoint_N, removals)."""

    wall_s: float = 0.0
    save_s: list[float] = field(default_factory=list)
    tune_files_s: list[float] = field(default_factory=list)
    last_bytes: dict[str, int] = field(default_factory=dict)

    @property
    def checkpoint_s(self) -> float:
        return sum(self.save_s) + sum(self.tune_files_s)


def q2_batch_config(epochs: int) -> TrialConfig:
    return TrialConfig(study="q2_batch", model="torch_ffn", epochs=epochs, learning_rate=0.1,
                       batch_size=1024, hidden_size=200, layers=2, activation="relu",
                       optimizer="sgd")


def checkpoint_like_tune(session: TrialSession, trial_dir: Path, index: int,
                         times: RunTimes) -> Path:
    """Checkpoint `session` as `medgrid tune` does; returns the new checkpoint directory."""
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="checkpoint_tmp_"))
    session.checkpoint().save(tmp)
    (tmp / RUN_ID_FILE).write_text(json.dumps({"run_id": RUN_ID}))
    saved = time.perf_counter()
    target = trial_dir / f"checkpoint_{index:06d}"
    shutil.copytree(tmp, target)
    shutil.rmtree(tmp)
    if index > 0:
        shutil.rmtree(trial_dir / f"checkpoint_{index - 1:06d}")
    done = time.perf_counter()
    times.save_s.append(saved - start)
    times.tune_files_s.append(done - saved)
    return target


def run_once(config: TrialConfig, data: Splits, trial_dir: Path | None) -> RunTimes:
    """One whole trial (build, every epoch, final test); checkpointed if `trial_dir`."""
    times = RunTimes()
    start = time.perf_counter()
    session = TrialSession(config, data)
    last: Path | None = None
    while not session.done:
        session.step()
        if trial_dir is not None:
            last = checkpoint_like_tune(session, trial_dir, session.epoch - 1, times)
    session.finish()
    times.wall_s = time.perf_counter() - start
    if last is not None:
        times.last_bytes = {p.name: p.stat().st_size for p in sorted(last.iterdir())}
    return times


def alternated(config: TrialConfig, data: Splits, work: Path, repeats: int
               ) -> tuple[list[RunTimes], list[RunTimes], list[str]]:
    """`repeats` pairs of runs, order alternating per pair: (with, without), (without, with),
    after an untimed one-epoch checkpointed warm-up (torch's first calls are slow)."""
    warm_up = work / "warm_up"
    warm_up.mkdir()
    run_once(config.model_copy(update={"epochs": 1}), data, warm_up)
    shutil.rmtree(warm_up)
    with_ckpt: list[RunTimes] = []
    without: list[RunTimes] = []
    order: list[str] = []
    for pair in range(repeats):
        for checkpointed in ((True, False) if pair % 2 == 0 else (False, True)):
            if checkpointed:
                trial_dir = work / f"trial_{pair}"
                trial_dir.mkdir()
                with_ckpt.append(run_once(config, data, trial_dir))
                shutil.rmtree(trial_dir)
            else:
                without.append(run_once(config, data, None))
            order.append("with" if checkpointed else "without")
    return with_ckpt, without, order


def summary(config: TrialConfig, data: Splits, with_ckpt: list[RunTimes],
            without: list[RunTimes], order: list[str]) -> dict[str, object]:
    checkpoint_s = sum(r.checkpoint_s for r in with_ckpt)
    training_s = sum(r.wall_s for r in with_ckpt) - checkpoint_s
    calls = [s + t for r in with_ckpt for s, t in zip(r.save_s, r.tune_files_s, strict=True)]
    wall_with, wall_without = sum(r.wall_s for r in with_ckpt), sum(r.wall_s for r in without)
    pct = 100 * checkpoint_s / training_s
    return {
        "trial": "q2_batch batch=1024 seed=42", "epochs": config.epochs,
        "n_train": data.identity.n_train, "runs_with_checkpoints": len(with_ckpt),
        "checkpoints_per_run": len(with_ckpt[0].save_s),
        "training_s": round(training_s / len(with_ckpt), 2),
        "checkpoint_s": round(checkpoint_s / len(with_ckpt), 3),
        "checkpoint_pct": round(pct, 2), "target_pct": TARGET_PCT,
        "within_target": pct < TARGET_PCT,
        "checkpoint_call_s": {"median": round(statistics.median(calls), 4),
                              "max": round(max(calls), 4)},
        "medgrid_save_s": round(sum(sum(r.save_s) for r in with_ckpt) / len(with_ckpt), 3),
        "tune_copy_and_delete_s": round(
            sum(sum(r.tune_files_s) for r in with_ckpt) / len(with_ckpt), 3),
        "bytes_per_checkpoint": {**with_ckpt[-1].last_bytes,
                                 "total": sum(with_ckpt[-1].last_bytes.values())},
        "cross_check_wall": {
            "order": order,
            "with_s": [round(r.wall_s, 2) for r in with_ckpt],
            "without_s": [round(r.wall_s, 2) for r in without],
            "ratio_with_over_without": round(wall_with / wall_without, 4),
            "overhead_pct": round(100 * (wall_with / wall_without - 1), 2),
            "note": "whole-run wall times on a shared machine: noisy, a cross-check only; "
                    "checkpoint_pct (stopwatch, same runs) is the measurement",
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--data", type=Path, help="an OCTMNIST-format .npz (default: the "
                        "full-size synthetic set, made in a temporary directory)")
    parser.add_argument("--n-train", type=int, help="train on a seeded subset of N samples")
    parser.add_argument("--repeats", type=int, default=2,
                        help="pairs of runs (with / without checkpoints), order alternating")
    args = parser.parse_args()
    if args.epochs < 1 or args.repeats < 1:
        parser.error("--epochs and --repeats must be >= 1")
    work = Path(tempfile.mkdtemp(prefix="medgrid-ckpt-overhead-"))
    try:
        data_file = args.data or synthetic.synthesize(work / "full.npz", seed=0)
        data = load_splits(data_file)
        if args.n_train:
            data = subsample_train(data, args.n_train)
        config = q2_batch_config(args.epochs)
        with_ckpt, without, order = alternated(config, data, work, args.repeats)
        print(json.dumps(summary(config, data, with_ckpt, without, order), indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
