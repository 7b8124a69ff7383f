"""One trial as a function of its config (pipeline/trial.py): for every model, the epochs it
trains and numbers, what it measures at the end, what a diverged trial leaves unmeasured, and
that the same config gives the same trial. No Ray, no MLflow: the fast layer."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import TrialConfig
from pipeline.data import Splits
from pipeline.errors import UserError
from pipeline.models import model_names
from pipeline.trial import TrialSession, confusion_matrix, run_trial

pytestmark = pytest.mark.fast

MODELS: tuple[str, ...] = model_names()
# Per model, a learning rate that learns something on the tiny set in a few epochs (a model
# added later gets 0.01 until it says otherwise here).
RATES = {"numpy_perceptron": 1.0, "numpy_logreg": 0.01, "numpy_mlp": 0.01,
         "torch_logreg": 0.1, "torch_ffn": 0.1, "torch_cnn": 0.1}
EPOCH_METRICS = {"train/loss", "train/acc", "val/loss", "val/acc", "epoch_time_s"}


def config(model: str, **changes: object) -> TrialConfig:
    hidden = {"hidden_size": 16} if model in ("numpy_mlp", "torch_ffn") else {}
    values = {"study": "t", "model": model, "seed": 3, "epochs": 2,
              "learning_rate": RATES.get(model, 0.01), "batch_size": 32, **hidden, **changes}
    return TrialConfig.model_validate(values)


@pytest.mark.parametrize("model", MODELS)
def test_a_trial_trains_each_epoch_once_and_tests_at_the_end(model: str,
                                                            tiny_splits: Splits) -> None:
    session = TrialSession(config(model, epochs=3), tiny_splits)
    epochs = []
    while not session.done:
        record = session.step()
        epochs.append(record.epoch)
        assert EPOCH_METRICS <= set(record.metrics), record.metrics
        assert session.epoch == record.epoch
    assert epochs == [1, 2, 3]
    result = session.finish()
    assert not result.diverged and 0.0 <= result.test_acc <= 1.0
    # Every test image counted once, in the row of its true class.
    np.testing.assert_array_equal(result.confusion.sum(axis=1),
                                  np.bincount(tiny_splits.y_test, minlength=4))
    assert result.val_correct is not None and result.val_correct.dtype == np.bool_
    assert result.val_correct.mean() == pytest.approx(result.final_metrics["val/acc"])
    assert result.final_metrics["test/acc"] == result.test_acc
    assert result.weights  # what the weights artifact is made of


@pytest.mark.parametrize("model", MODELS)
def test_the_same_config_gives_the_same_trial(model: str, tiny_splits: Splits) -> None:
    first, second = (run_trial(config(model), tiny_splits) for _ in range(2))
    drop_time = [{k: v for k, v in r.metrics.items() if k != "epoch_time_s"}
                 for r in first.history]
    assert drop_time == [{k: v for k, v in r.metrics.items() if k != "epoch_time_s"}
                         for r in second.history]
    assert first.test_acc == second.test_acc


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_diverged_trial_stops_and_leaves_its_test_unmeasured(optimizer: str,
                                                              tiny_splits: Splits) -> None:
    session = TrialSession(config("torch_ffn", learning_rate=1e30, optimizer=optimizer,
                                  epochs=4), tiny_splits)
    session.step()
    assert session.done and session.epoch == 1  # no epoch after the loss became NaN
    result = session.finish()
    assert result.diverged and not np.isfinite(result.history[-1].metrics["train/loss"])
    assert np.isnan(result.test_acc) and result.confusion.sum() == 0
    assert result.val_correct is None


@pytest.mark.parametrize(("every", "epochs", "expected"), [
    (1, 3, [1, 2, 3]), (2, 5, [2, 4]), (3, 2, []), (0, 3, []),
])
def test_checkpoints_come_every_k_epochs(every: int, epochs: int, expected: list[int],
                                         tiny_splits: Splits) -> None:
    seen: list[int] = []
    run_trial(config("numpy_logreg", epochs=epochs), tiny_splits, checkpoint_every=every,
              on_checkpoint=lambda checkpoint: seen.append(checkpoint.epoch))
    assert seen == expected


def test_a_negative_checkpoint_interval_is_a_user_error(tiny_splits: Splits) -> None:
    with pytest.raises(UserError, match="checkpoint_every = -1"):
        run_trial(config("numpy_logreg"), tiny_splits, checkpoint_every=-1)


@pytest.mark.parametrize(("true", "predicted", "expected"), [
    ([0, 1, 2, 3], [0, 1, 2, 3], np.eye(4, dtype=int)),
    ([0, 0, 0], [3, 3, 3], [[0, 0, 0, 3], [0] * 4, [0] * 4, [0] * 4]),  # rows true, cols predicted
    ([], [], np.zeros((4, 4), dtype=int)),
])
def test_confusion_matrix_counts_true_by_predicted(true: list, predicted: list,
                                                   expected: object) -> None:
    counts = confusion_matrix(np.array(true, dtype=np.int64), np.array(predicted, dtype=np.int64))
    np.testing.assert_array_equal(counts, np.array(expected))
