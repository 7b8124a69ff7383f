"""One trial as a function of its config: seed, build the learner, fit, test, return metrics.

Knows nothing of Ray or MLflow: the caller passes `on_epoch` to observe progress (Tune reports,
MLflow logging), so the same function runs in tests without either.

Checkpoints: `run_trial(..., checkpoint_every=k, on_checkpoint=save)` hands `save` a
`TrialCheckpoint` after every k-th epoch (epoch numbers count from the start of the trial, so a
resumed trial keeps the cadence); `run_trial(..., resume_from=checkpoint)` continues from it.
A trial resumed from the checkpoint of epoch k ends bitwise identical (weights, per-epoch metrics
except `epoch_time_s`, test accuracy) to the uninterrupted trial, on CPU; see
`pipeline.models.engines.torch_models` for what holds on GPU.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, ClassVar

import numpy as np

from pipeline.config import TrialConfig
from pipeline.data import N_CLASSES, Splits
from pipeline.errors import UserError
from pipeline.models import build_learner
from pipeline.train import EpochRecord, fit

EpochCallback = Callable[[EpochRecord], None]


@dataclass
class TrialResult:
    """What a finished (or diverged) trial produced."""

    config: TrialConfig
    history: list[EpochRecord] = field(default_factory=list)
    diverged: bool = False
    test_acc: float = float("nan")
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((N_CLASSES, N_CLASSES), int))
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    # Per validation image, whether the final model got it right: the paired tests of the
    # report compare trials on the same images. None for a diverged trial.
    val_correct: np.ndarray | None = None

    @property
    def final_metrics(self) -> dict[str, float]:
        """The last epoch's metrics plus `test/acc`."""
        last = self.history[-1].metrics if self.history else {}
        return {**last, "test/acc": self.test_acc}


@dataclass
class TrialCheckpoint:
    """A trial after `epoch` epochs: the learner's complete training state
    (`Learner.get_state`, numpy arrays only) and the epoch records so far (so that a resumed
    trial's `TrialResult.history`, and the artifacts made from it, are complete).

    On disk, a directory of two files, each written atomically (temporary file, then
    `os.replace`): `state.npz` (`np.savez`, read back with `allow_pickle=False`: never a pickle)
    and `history.json`. `load` refuses a directory whose two files disagree on the epoch (a save
    interrupted between them).
    """

    epoch: int
    learner_state: dict[str, np.ndarray]
    history: list[EpochRecord]

    STATE_FILE: ClassVar[str] = "state.npz"
    HISTORY_FILE: ClassVar[str] = "history.json"

    def save(self, directory: Path) -> None:
        """Write `state.npz` and `history.json` into `directory` (created if missing)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        _write_atomically(directory / self.STATE_FILE,
                          lambda f: np.savez(f, allow_pickle=False, **self.learner_state))
        history = {"epoch": self.epoch, "history": [asdict(record) for record in self.history]}
        _write_atomically(directory / self.HISTORY_FILE,
                          lambda f: f.write(json.dumps(history, indent=1).encode()))

    @classmethod
    def load(cls, directory: Path) -> TrialCheckpoint:
        """Read a checkpoint that `save` wrote; `UserError` if it is missing or inconsistent."""
        directory = Path(directory)
        state_path, history_path = directory / cls.STATE_FILE, directory / cls.HISTORY_FILE
        try:
            with np.load(state_path, allow_pickle=False) as npz:
                state = {name: npz[name] for name in npz.files}
            payload = json.loads(history_path.read_text())
            epoch = int(payload["epoch"])
            history = [EpochRecord(int(r["epoch"]), {k: float(v) for k, v in r["metrics"].items()},
                                   bool(r["diverged"])) for r in payload["history"]]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise UserError(f"checkpoint {directory}: cannot be read ({error})") from None
        done = _epochs_done(state)
        if done != epoch:
            raise UserError(f"checkpoint {directory}: {cls.STATE_FILE} is of epoch {done}, "
                            f"{cls.HISTORY_FILE} of epoch {epoch} (a save was interrupted?)")
        return cls(epoch, state, history)


CheckpointCallback = Callable[[TrialCheckpoint], None]


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = N_CLASSES
                     ) -> np.ndarray:
    """Counts[true, predicted]."""
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes**2).reshape(
        n_classes, n_classes
    )


class TrialSession:
    """One trial, an epoch at a time: what `run_trial` loops over, and what a caller that owns
    the loop (Ray Tune's class trainable) drives itself: `step` per epoch, `checkpoint` when it
    wants one, `finish` to test the model it has (also a model stopped early)."""

    def __init__(self, config: TrialConfig, data: Splits,
                 resume_from: TrialCheckpoint | None = None) -> None:
        self.config, self.data = config, data
        self.learner = build_learner(config, data)
        self.result = TrialResult(config)
        start_epoch = 1
        if resume_from is not None:
            _check_resumable(resume_from, config)
            self.learner.set_state(resume_from.learner_state)
            self.result.history = list(resume_from.history)
            start_epoch = resume_from.epoch + 1
        self._records = fit(self.learner, config.epochs, start_epoch)

    @property
    def epoch(self) -> int:
        """The last epoch trained (0 before the first)."""
        return self.result.history[-1].epoch if self.result.history else 0

    @property
    def done(self) -> bool:
        """Whether training is over: every epoch trained, or the loss diverged."""
        return self.result.diverged or self.epoch >= self.config.epochs

    def step(self) -> EpochRecord:
        """Train and evaluate the next epoch."""
        record = next(self._records)
        self.result.history.append(record)
        self.result.diverged = record.diverged
        return record

    def checkpoint(self) -> TrialCheckpoint:
        """The trial as it stands (one copy of the learner's state)."""
        return TrialCheckpoint(self.epoch, self.learner.get_state(), list(self.result.history))

    def finish(self) -> TrialResult:
        """Test the model once and collect what the artifacts need.

        A diverged model's predictions come from NaN weights: its test accuracy stays NaN (not
        measured) and it gets no per-image validation record.
        """
        result = self.result
        if not result.diverged:
            test = self.learner.evaluate("test")
            result.test_acc = test.acc
            result.confusion = confusion_matrix(self.data.y_test, test.predictions)
            val = self.learner.evaluate("val")
            result.val_correct = val.predictions == self.data.y_val
        result.weights = self.learner.state_dict()
        return result


# How a trial session is made; tests swap in one that fails on purpose.
SessionFactory = Callable[[TrialConfig, Splits, "TrialCheckpoint | None"], TrialSession]


def run_trial(config: TrialConfig, data: Splits, on_epoch: EpochCallback | None = None,
              resume_from: TrialCheckpoint | None = None, *, checkpoint_every: int = 0,
              on_checkpoint: CheckpointCallback | None = None) -> TrialResult:
    """Train `config.model` on `data` for `config.epochs` epochs and test it once at the end.

    `on_epoch(record)` is called after every epoch. With `checkpoint_every` = k > 0 and
    `on_checkpoint`, `on_checkpoint(checkpoint)` is called after every epoch whose number is a
    multiple of k, just BEFORE `on_epoch` of that same epoch (`checkpoint.history[-1]` is its
    record). None is taken of a diverged epoch (training stops there).

    `resume_from`: a checkpoint of this trial (same config); the learner is restored from it and
    training continues at epoch `resume_from.epoch + 1`, records numbered as in an uninterrupted
    run, `result.history` starting with the checkpoint's records.
    """
    if checkpoint_every < 0:
        raise UserError(f"checkpoint_every = {checkpoint_every}: expected >= 0 (0: never)")
    session = TrialSession(config, data, resume_from)
    while not session.done:
        record = session.step()
        if (on_checkpoint is not None and checkpoint_every and not record.diverged
                and record.epoch % checkpoint_every == 0):
            on_checkpoint(session.checkpoint())
        if on_epoch is not None:
            on_epoch(record)
    return session.finish()


def _check_resumable(checkpoint: TrialCheckpoint, config: TrialConfig) -> None:
    """`UserError` unless `checkpoint` can resume a trial of `config` (the learner checks its
    own state when it is restored)."""
    epoch = checkpoint.epoch
    if not 0 <= epoch <= config.epochs:
        raise UserError(f"checkpoint of epoch {epoch}: expected 0..{config.epochs} "
                        f"(epochs = {config.epochs})")
    numbers = [record.epoch for record in checkpoint.history]
    if numbers != list(range(1, epoch + 1)) or any(r.diverged for r in checkpoint.history):
        raise UserError(f"checkpoint of epoch {epoch}: its history has epochs {numbers} "
                        f"(expected 1..{epoch}, none diverged)")
    done = _epochs_done(checkpoint.learner_state)
    if done != epoch:
        raise UserError(f"checkpoint of epoch {epoch}: its learner state has done {done} epochs")


def _epochs_done(state: dict[str, np.ndarray]) -> int | None:
    """A learner state's `epochs_done`, or None if it has no such count."""
    done = state.get("epochs_done")
    if isinstance(done, np.ndarray) and done.shape == () and done.dtype.kind in "iu":
        return int(done)
    return None


def _write_atomically(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write `path` through a temporary file in its directory, then `os.replace` it."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
