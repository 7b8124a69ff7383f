"""Per-epoch checkpoints: a trial resumed from the checkpoint of epoch k, written to files and read
back into a fresh learner, ends bitwise identical to the uninterrupted trial (weights, optimiser
and RNG state, per-epoch metrics, test accuracy), for every model and option; bad states are
refused with a one-line UserError; a checkpoint is never a pickle."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import TrialConfig
from pipeline.data import Splits
from pipeline.errors import UserError
from pipeline.models import build_learner
from pipeline.models.engines import torch_models
from pipeline.train import EpochRecord
from pipeline.trial import TrialCheckpoint, TrialResult, run_trial

pytestmark = pytest.mark.fast  # no Ray, no MLflow: `make test-fast`

EPOCHS = 3
HIDDEN = 12

CASES: dict[str, dict[str, object]] = {
    "numpy_perceptron": dict(model="numpy_perceptron", learning_rate=1.0),
    "numpy_logreg": dict(model="numpy_logreg", learning_rate=0.001),
    "numpy_mlp": dict(model="numpy_mlp", learning_rate=0.001, hidden_size=HIDDEN),
    "numpy_mlp-float32": dict(model="numpy_mlp", learning_rate=0.001, hidden_size=HIDDEN,
                              dtype="float32"),
    "torch_logreg-sgd": dict(model="torch_logreg", learning_rate=0.01),
    "torch_logreg-adam": dict(model="torch_logreg", learning_rate=0.001, optimizer="adam"),
    "torch_ffn-sgd": dict(model="torch_ffn", learning_rate=0.1),
    "torch_ffn-sgd-l2": dict(model="torch_ffn", learning_rate=0.1, l2_decay=0.01),
    "torch_ffn-sgd-dropout": dict(model="torch_ffn", learning_rate=0.1, dropout=0.3),
    "torch_ffn-adam": dict(model="torch_ffn", learning_rate=0.001, optimizer="adam"),
    "torch_ffn-2-layers-tanh": dict(model="torch_ffn", learning_rate=0.1, layers=2,
                                    activation="tanh"),
    # 400 training samples: batches of 24 leave a partial batch of 16 at the end of each epoch.
    "torch_ffn-partial-batch": dict(model="torch_ffn", learning_rate=0.1, batch_size=24),
    "torch_ffn-adam-everything": dict(model="torch_ffn", learning_rate=0.001, optimizer="adam",
                                      layers=2, dropout=0.2, l2_decay=0.001, batch_size=24),
}


def make_config(case: str, **overrides: object) -> TrialConfig:
    values: dict[str, object] = {"study": "ckpt", "epochs": EPOCHS, "seed": 7, **CASES[case]}
    if values["model"] == "torch_ffn":
        values.setdefault("hidden_size", HIDDEN)
    return TrialConfig(**{**values, **overrides})


def run_with_checkpoints(config: TrialConfig, data: Splits,
                         resume_from: TrialCheckpoint | None = None
                         ) -> tuple[TrialResult, dict[int, TrialCheckpoint]]:
    checkpoints: dict[int, TrialCheckpoint] = {}
    result = run_trial(config, data, resume_from=resume_from, checkpoint_every=1,
                       on_checkpoint=lambda c: checkpoints.setdefault(c.epoch, c))
    return result, checkpoints


def metrics(history: list[EpochRecord]) -> list[tuple[int, bool, dict[str, float]]]:
    """Each record without its wall time (the one metric that may differ between runs)."""
    return [(r.epoch, r.diverged, {k: v for k, v in r.metrics.items() if k != "epoch_time_s"})
            for r in history]


def assert_same_state(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(actual) == sorted(expected)
    for name, value in expected.items():
        assert actual[name].dtype == value.dtype, name
        assert np.array_equal(actual[name], value), name


# ------------------------------------------------------------------ bitwise resume
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("resume_after", [1, 2])
def test_a_resumed_trial_ends_bitwise_identical(case: str, resume_after: int, tiny_splits: Splits,
                                                tmp_path: Path) -> None:
    case_config = make_config(case)
    plain = run_trial(case_config, tiny_splits)
    full, checkpoints = run_with_checkpoints(case_config, tiny_splits)
    assert sorted(checkpoints) == list(range(1, EPOCHS + 1))
    # Taking checkpoints changes nothing.
    assert metrics(full.history) == metrics(plain.history)
    assert_same_state(full.weights, plain.weights)

    checkpoints[resume_after].save(tmp_path / "ckpt")
    loaded = TrialCheckpoint.load(tmp_path / "ckpt")
    assert loaded.epoch == resume_after
    resumed, later = run_with_checkpoints(case_config, tiny_splits, resume_from=loaded)

    assert sorted(later) == list(range(resume_after + 1, EPOCHS + 1))
    assert [r.epoch for r in resumed.history] == list(range(1, EPOCHS + 1))
    assert metrics(resumed.history) == metrics(full.history)
    assert resumed.history[0].metrics["epoch_time_s"] == full.history[0].metrics["epoch_time_s"]
    assert resumed.test_acc == full.test_acc
    assert np.array_equal(resumed.confusion, full.confusion)
    assert_same_state(resumed.weights, full.weights)
    # The whole final training state too: optimiser moments, step counts, RNG, epochs done.
    assert_same_state(later[EPOCHS].learner_state, checkpoints[EPOCHS].learner_state)
    if case_config.model == "numpy_mlp":
        dtype = np.float32 if case.endswith("-float32") else np.float64
        assert loaded.learner_state["param/W1"].dtype == dtype


@pytest.mark.parametrize("case", ["torch_ffn-adam", "torch_ffn-sgd-dropout", "numpy_mlp"])
def test_a_checkpoint_of_epoch_zero_resumes_the_whole_trial(case: str, tiny_splits: Splits
                                                            ) -> None:
    config = make_config(case, epochs=2)
    fresh = build_learner(config, tiny_splits).get_state()
    assert not any(key.startswith("adam/") for key in fresh)  # Adam has not stepped yet
    plain = run_trial(config, tiny_splits)
    resumed = run_trial(config, tiny_splits, resume_from=TrialCheckpoint(0, fresh, []))
    assert metrics(resumed.history) == metrics(plain.history)
    assert_same_state(resumed.weights, plain.weights)


@pytest.mark.parametrize("case", ["torch_ffn-adam-everything", "torch_ffn-sgd-dropout",
                                  "numpy_mlp", "numpy_perceptron"])
def test_restoring_into_a_used_learner_overwrites_all_of_its_state(case: str,
                                                                   tiny_splits: Splits) -> None:
    """The in-place path (Adam's state already exists, as after a CUDA-graph capture)."""
    config = make_config(case)
    reference = build_learner(config, tiny_splits)
    reference.train_epoch()
    saved = reference.get_state()
    reference.train_epoch()
    expected = reference.get_state()

    used = build_learner(config.model_copy(update={"seed": 99}), tiny_splits)
    used.train_epoch()
    used.train_epoch()
    used.set_state(saved)
    used.train_epoch()
    assert_same_state(used.get_state(), expected)


def test_torch_restore_writes_into_the_tensors_the_fast_loop_holds(tiny_splits: Splits) -> None:
    config = make_config("torch_ffn-adam")
    source = build_learner(config, tiny_splits)
    source.train_epoch()
    target = build_learner(config.model_copy(update={"seed": 3}), tiny_splits)
    views = target.loop.backprop.wt + target.loop.backprop.b
    pointers = [t.data_ptr() for t in views]
    target.set_state(source.get_state())
    assert [t.data_ptr() for t in target.loop.backprop.wt + target.loop.backprop.b] == pointers
    for view, lin in zip(target.loop.backprop.wt, torch_models.linears(source.model),
                         strict=True):
        assert torch.equal(view, lin.weight.detach().t())


def test_get_state_returns_copies(tiny_splits: Splits) -> None:
    for case in ("torch_ffn-adam", "numpy_mlp", "numpy_logreg"):
        learner = build_learner(make_config(case), tiny_splits)
        learner.train_epoch()
        state = learner.get_state()
        before = {k: v.copy() for k, v in state.items()}
        learner.train_epoch()
        assert_same_state(state, before)
        assert int(learner.get_state()["epochs_done"]) == 2


# ------------------------------------------------------------------ hooks
def test_checkpoints_come_every_k_epochs_before_that_epochs_report(tiny_splits: Splits) -> None:
    events: list[tuple[str, int]] = []

    def on_checkpoint(checkpoint: TrialCheckpoint) -> None:
        assert checkpoint.history[-1].epoch == checkpoint.epoch
        events.append(("checkpoint", checkpoint.epoch))

    config = make_config("numpy_logreg", epochs=5)
    run_trial(config, tiny_splits, lambda r: events.append(("epoch", r.epoch)),
              checkpoint_every=2, on_checkpoint=on_checkpoint)
    assert events == [("epoch", 1), ("checkpoint", 2), ("epoch", 2), ("epoch", 3),
                      ("checkpoint", 4), ("epoch", 4), ("epoch", 5)]


def test_no_checkpoint_of_a_diverged_epoch(tiny_splits: Splits) -> None:
    taken: list[TrialCheckpoint] = []
    # At this rate float32 overflows in these 3 epochs; float64's wider range would not.
    config = make_config("numpy_logreg", learning_rate=1e38, dtype="float32")
    result = run_trial(config, tiny_splits, checkpoint_every=1, on_checkpoint=taken.append)
    assert result.diverged and result.history[-1].diverged
    assert [c.epoch for c in taken] == [r.epoch for r in result.history[:-1]]


def test_a_checkpoint_resumes_only_a_trial_it_fits(tiny_splits: Splits) -> None:
    config = make_config("numpy_logreg")
    _, checkpoints = run_with_checkpoints(config, tiny_splits)
    with pytest.raises(UserError, match="epoch 3"):
        run_trial(config.model_copy(update={"epochs": 2}), tiny_splits,
                  resume_from=checkpoints[3])
    with pytest.raises(UserError, match="history"):
        bad = checkpoints[2]
        run_trial(config, tiny_splits,
                  resume_from=TrialCheckpoint(2, bad.learner_state, bad.history[:1]))
    with pytest.raises(UserError, match="learner state has done 1"):
        run_trial(config, tiny_splits, resume_from=TrialCheckpoint(
            2, checkpoints[1].learner_state, checkpoints[2].history))
    # Resuming at the last epoch only tests.
    done = run_trial(config, tiny_splits, resume_from=checkpoints[3])
    assert len(done.history) == 3


# ------------------------------------------------------------------ refused states
def state_of(case: str, data: Splits, epochs: int = 1, **overrides: object) -> dict:
    learner = build_learner(make_config(case, **overrides), data)
    for _ in range(epochs):
        learner.train_epoch()
    return learner.get_state()


REFUSED = [  # (learner, state of, match)
    (("numpy_mlp", {}), ("numpy_logreg", {}), "of model 'numpy_logreg'"),
    (("torch_ffn-sgd", {}), ("numpy_mlp", {}), "of model 'numpy_mlp'"),
    (("numpy_logreg", {}), ("torch_logreg-sgd", {}), "of model 'torch_logreg'"),
    (("numpy_mlp", {}), ("numpy_mlp", {"hidden_size": HIDDEN + 1}), "param/W1"),
    (("torch_ffn-sgd", {}), ("torch_ffn-sgd", {"hidden_size": HIDDEN + 1}), "net.0.weight"),
    (("torch_ffn-sgd", {}), ("torch_ffn-2-layers-tanh", {}), "unexpected.*net.6.weight"),
    (("torch_ffn-adam", {}), ("torch_ffn-sgd", {}), "missing.*adam/"),
    (("torch_ffn-sgd", {}), ("torch_ffn-adam", {}), "unexpected.*adam/"),
]


@pytest.mark.parametrize(("learner_case", "state_case", "match"), REFUSED,
                         ids=lambda v: v[0] if isinstance(v, tuple) else None)
def test_set_state_refuses_another_models_state_and_changes_nothing(
        learner_case: tuple, state_case: tuple, match: str, tiny_splits: Splits) -> None:
    learner = build_learner(make_config(learner_case[0], **learner_case[1]), tiny_splits)
    learner.train_epoch()
    before = learner.get_state()
    with pytest.raises(UserError, match=match) as error:
        learner.set_state(state_of(state_case[0], tiny_splits, **state_case[1]))
    assert "\n" not in str(error.value)
    assert_same_state(learner.get_state(), before)


def test_set_state_refuses_another_dtype_and_broken_entries(tiny_splits: Splits) -> None:
    state = state_of("numpy_mlp-float32", tiny_splits)
    wide = build_learner(make_config("numpy_mlp"), tiny_splits)  # float64, the default
    with pytest.raises(UserError, match="float32.*float64"):
        wide.set_state(state)
    learner = build_learner(make_config("numpy_mlp-float32"), tiny_splits)
    for key, value, match in [("rng", np.array("not json"), "JSON"),
                              ("rng", np.array('{"bit_generator": "MT19937"}'), "PCG64"),
                              ("epochs_done", np.array(-1), "epochs_done"),
                              ("kind", np.array(3), "of model None")]:
        with pytest.raises(UserError, match=match):
            learner.set_state({**state, key: value})
    torch_state = state_of("torch_ffn-sgd", tiny_splits)
    torch_learner = build_learner(make_config("torch_ffn-sgd"), tiny_splits)
    with pytest.raises(UserError, match="from a cuda generator"):
        torch_learner.set_state({**torch_state, "rng_device": np.array("cuda"),
                                 "rng": np.zeros(16, np.uint8)})


# ------------------------------------------------------------------ files
def test_a_checkpoint_on_disk_is_npz_and_json_never_a_pickle(tiny_splits: Splits,
                                                             tmp_path: Path) -> None:
    _, checkpoints = run_with_checkpoints(make_config("torch_ffn-adam-everything"), tiny_splits)
    checkpoints[2].save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json", "state.npz"]
    with np.load(tmp_path / "state.npz", allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    assert all(a.dtype != object for a in arrays.values())
    assert_same_state(arrays, checkpoints[2].learner_state)
    with zipfile.ZipFile(tmp_path / "state.npz") as archive:
        assert all(name.endswith(".npy") for name in archive.namelist())
    loaded = TrialCheckpoint.load(tmp_path)
    assert loaded.history == checkpoints[2].history
    # Saving again over it replaces both files, leaving no temporaries.
    checkpoints[3].save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json", "state.npz"]
    assert TrialCheckpoint.load(tmp_path).epoch == 3


def test_load_refuses_missing_or_torn_checkpoints(tiny_splits: Splits, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot be read"):
        TrialCheckpoint.load(tmp_path / "nowhere")
    _, checkpoints = run_with_checkpoints(make_config("numpy_logreg"), tiny_splits)
    checkpoints[1].save(tmp_path / "one")
    checkpoints[2].save(tmp_path / "two")
    (tmp_path / "one" / "history.json").replace(tmp_path / "two" / "history.json")
    with pytest.raises(UserError, match="interrupted"):
        TrialCheckpoint.load(tmp_path / "two")
