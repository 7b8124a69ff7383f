"""The numpy models do the homework's math exactly: gradients equal torch autograd's, one SGD step
and one whole epoch equal a plain np.outer reference, and the fast path updates in place."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
from pydantic import ValidationError

from pipeline.config import TrialConfig
from pipeline.data import N_CLASSES, DatasetIdentity, Splits, add_bias
from pipeline.errors import UserError
from pipeline.models.engines import numpy_math as nmath
from pipeline.models.engines import numpy_models as nm
from pipeline.train import fit

pytestmark = pytest.mark.fast  # no Ray, no MLflow: `make test-fast`

MODELS = ("numpy_perceptron", "numpy_logreg", "numpy_mlp")


def make_splits(n: int = 200, d: int = 784, seed: int = 0, separable: bool = False) -> Splits:
    """Small random splits, read-only like arrays from Ray's object store (a write would raise)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, n)
    if separable:  # well-separated class clusters
        x = np.clip(rng.random((N_CLASSES, d))[y] + 0.05 * rng.standard_normal((n, d)), 0, 0.99)
    else:
        x = rng.random((n, d))
    x = (np.floor(x * 256) / 256).astype(np.float32)  # the homework's pixel / 256
    for array in (x, y):
        array.flags.writeable = False
    cut = n // 2
    identity = DatasetIdentity("synthetic", "0" * 32, "hw1", cut, n - cut, n - cut)
    return Splits(x[:cut], y[:cut], x[cut:], y[cut:], x[cut:], y[cut:], identity)


def config(model: str, **overrides) -> TrialConfig:
    values = {"study": "test", "model": model, "epochs": 1, "learning_rate": 0.001, **overrides}
    return TrialConfig(**values)


def random_mlp(rng: np.random.Generator, d: int = 12, hidden: int = 9) -> nmath.MLPParams:
    """Float64 parameters centred on zero, so both sides of the ReLU are exercised."""
    return nmath.MLPParams(rng.standard_normal((hidden, d)), rng.standard_normal(hidden),
                           rng.standard_normal((N_CLASSES, hidden)), rng.standard_normal(N_CLASSES))


def assert_close_relative(actual: np.ndarray, expected: np.ndarray, tol: float = 1e-6) -> None:
    error = np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-30)
    assert error <= tol, f"relative error {error:.2e}"


# ------------------------------------------------------------------ gradients vs torch autograd


def test_mlp_gradients_equal_torch_autograd() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    for _ in range(5):
        params = random_mlp(rng)
        x, y = rng.random(12), int(rng.integers(N_CLASSES))
        loss, grads = nmath.mlp_gradients(params, x, y)

        t = {k: torch.tensor(v, requires_grad=True) for k, v in params.as_dict().items()}
        hidden = torch.relu(t["W1"] @ torch.tensor(x) + t["b1"])
        logits = t["W2"] @ hidden + t["b2"]
        t_loss = torch.nn.functional.cross_entropy(logits[None], torch.tensor([y]))
        t_loss.backward()

        assert loss == pytest.approx(t_loss.item(), rel=1e-10)
        assert 0 < np.count_nonzero(grads["b1"]) < 9  # some hidden units inactive, some active
        for name, grad in grads.items():
            assert_close_relative(grad, t[name].grad.numpy())


def test_logreg_gradients_equal_torch_autograd() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    for _ in range(5):
        W, b = rng.standard_normal((N_CLASSES, 12)), rng.standard_normal(N_CLASSES)
        x, y = rng.random(12), int(rng.integers(N_CLASSES))
        loss, grads = nmath.logreg_gradients(W, b, x, y)

        tW, tb = (torch.tensor(a, requires_grad=True) for a in (W, b))
        t_loss = torch.nn.functional.cross_entropy((tW @ torch.tensor(x) + tb)[None],
                                                   torch.tensor([y]))
        t_loss.backward()

        assert loss == pytest.approx(t_loss.item(), rel=1e-10)
        assert_close_relative(grads["W"], tW.grad.numpy())
        assert_close_relative(grads["b"], tb.grad.numpy())


def test_softmax_is_stable_for_large_logits() -> None:
    z = np.array([1000.0, 0.0, -1000.0, 999.0])
    dz = np.empty(4)
    loss = nmath.softmax_xent(z.copy(), 1, dz)
    assert loss == pytest.approx(1000.0 + np.log1p(np.exp(-1.0)))
    assert np.all(np.isfinite(dz)) and dz.sum() == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------ SGD steps vs a plain reference


def reference_mlp_step(p: dict[str, np.ndarray], x: np.ndarray, y: int, lr: float) -> float:
    """The homework's step, written plainly: forward, backward, W -= lr * np.outer(...)."""
    h_pre = p["W1"] @ x + p["b1"]
    h = np.maximum(h_pre, 0)
    z = p["W2"] @ h + p["b2"]
    probs = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    dz = probs - np.eye(N_CLASSES)[y]
    dh = (p["W2"].T @ dz) * (h_pre > 0)
    p["W2"] -= lr * np.outer(dz, h)
    p["b2"] -= lr * dz
    p["W1"] -= lr * np.outer(dh, x)
    p["b1"] -= lr * dh
    return float(-np.log(probs[y]))


def reference_logreg_step(W: np.ndarray, x: np.ndarray, y: int, lr: float) -> float:
    """W (4, 785) with the bias feature already in x."""
    z = W @ x
    probs = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    W -= lr * np.outer(probs - np.eye(N_CLASSES)[y], x)
    return float(-np.log(probs[y]))


def test_mlp_sgd_step_equals_reference_step() -> None:
    rng = np.random.default_rng(3)
    params = random_mlp(rng)
    expected = {k: v.copy() for k, v in params.as_dict().items()}
    x, y = rng.random(12), 2
    loss = nmath.mlp_sgd_step(params, x, y, 0.05, nmath.Workspace(9, np.float64))
    assert loss == pytest.approx(reference_mlp_step(expected, x, y, 0.05), rel=1e-12)
    for name, array in params.as_dict().items():
        np.testing.assert_allclose(array, expected[name], rtol=1e-12, atol=1e-14)


def test_logreg_sgd_step_equals_reference_step() -> None:
    rng = np.random.default_rng(4)
    W, b = rng.standard_normal((N_CLASSES, 12)), rng.standard_normal(N_CLASSES)
    expected = np.hstack([W, b[:, None]])
    x, y = rng.random(12), 1
    loss = nmath.logreg_sgd_step(W, b, x, y, 0.1, nmath.Workspace(0, np.float64))
    assert loss == pytest.approx(reference_logreg_step(expected, np.append(x, 1.0), y, 0.1))
    np.testing.assert_allclose(np.hstack([W, b[:, None]]), expected, rtol=1e-12, atol=1e-14)


def test_mlp_epoch_equals_reference_loop_in_the_same_order() -> None:
    data = make_splits(d=30)
    learner = nm.MLP(data, lr=0.001, seed=5, hidden=16, dtype=np.float64)
    expected = {k: v.astype(np.float64) for k, v in learner.state_dict().items()}
    order = nm.epoch_order(copy.deepcopy(learner.rng), len(data.y_train))
    total = sum(reference_mlp_step(expected, data.x_train[i].astype(np.float64),
                                   int(data.y_train[i]), 0.001) for i in order)

    loss = learner.train_epoch()

    assert loss.total == pytest.approx(total, rel=1e-10)
    assert loss.mean == pytest.approx(total / len(order), rel=1e-10)
    for name, array in learner.state_dict().items():
        np.testing.assert_allclose(array, expected[name], rtol=1e-10, atol=1e-12)


def test_logreg_epoch_equals_reference_loop_with_the_bias_feature() -> None:
    data = make_splits(d=30)
    learner = nm.LogisticRegression(data, lr=0.1, seed=6, dtype=np.float64)
    order = nm.epoch_order(copy.deepcopy(learner.rng), len(data.y_train))
    W = np.zeros((N_CLASSES, 31))
    x_bias = add_bias(data.x_train.astype(np.float64))
    total = sum(reference_logreg_step(W, x_bias[i], int(data.y_train[i]), 0.1) for i in order)

    assert learner.train_epoch().total == pytest.approx(total, rel=1e-10)
    np.testing.assert_allclose(learner.state_dict()["W"], W, rtol=1e-10, atol=1e-12)


def test_perceptron_epoch_equals_reference_loop_with_the_bias_feature() -> None:
    data = make_splits(d=30)
    learner = nm.Perceptron(data, lr=1.0, seed=9, dtype=np.float64)
    order = nm.epoch_order(copy.deepcopy(learner.rng), len(data.y_train))
    W = np.zeros((N_CLASSES, 31))
    x_bias = add_bias(data.x_train.astype(np.float64))
    total = 0.0
    for i in order:
        x, y = x_bias[i], int(data.y_train[i])
        scores = W @ x
        y_hat = int(np.argmax(scores))
        total += scores[y_hat] - scores[y]
        if y_hat != y:
            W[y] += x
            W[y_hat] -= x

    assert learner.train_epoch().total == pytest.approx(total, rel=1e-12)
    np.testing.assert_allclose(learner.state_dict()["W"], W, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ training behaviour


def test_perceptron_separates_a_linearly_separable_set() -> None:
    learner = nm.build("numpy_perceptron", config("numpy_perceptron", learning_rate=1.0),
                       make_splits(separable=True))
    losses = [learner.train_epoch() for _ in range(5)]
    assert learner.evaluate("train").acc == 1.0
    assert learner.evaluate("val").acc == 1.0
    assert losses[-1].total == 0.0  # no mistakes left: the criterion is zero on every sample
    assert all(np.isfinite(loss.mean) for loss in losses)


@pytest.mark.parametrize("model", MODELS)
def test_an_epoch_updates_the_weights_in_place(model: str) -> None:
    learner = nm.build(model, config(model, learning_rate=0.1), make_splits())
    arrays = ([learner.W, learner.b] if model != "numpy_mlp"
              else list(learner.params.as_dict().values()))
    before = [(array, array.ctypes.data, array.copy()) for array in arrays]
    learner.train_epoch()
    current = ([learner.W, learner.b] if model != "numpy_mlp"
               else list(learner.params.as_dict().values()))
    for (array, address, values), now in zip(before, current, strict=True):
        assert now is array and now.ctypes.data == address
        assert not np.array_equal(now, values)


@pytest.mark.parametrize("model", MODELS)
def test_same_seed_same_weights_other_seed_other_order(model: str) -> None:
    data = make_splits()

    def weights_after_one_epoch(seed: int) -> dict[str, np.ndarray]:
        learner = nm.build(model, config(model, seed=seed, learning_rate=0.1), data)
        learner.train_epoch()
        return learner.state_dict()

    first, again, other = (weights_after_one_epoch(s) for s in (7, 7, 8))
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    assert any(not np.array_equal(first[k], other[k]) for k in first)
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(8)
    assert not np.array_equal(nm.epoch_order(rng_a, 100), nm.epoch_order(rng_b, 100))


def test_each_epoch_draws_a_new_order() -> None:
    rng = np.random.default_rng(0)
    assert not np.array_equal(nm.epoch_order(rng, 100), nm.epoch_order(rng, 100))


def test_mlp_init_follows_the_homework() -> None:
    learner = nm.build("numpy_mlp", config("numpy_mlp"), make_splits(n=8))
    p = learner.params
    assert p.W1.shape == (200, 784) and p.W2.shape == (N_CLASSES, 200)
    assert p.W1.dtype == np.float64  # the homework's precision, the default
    assert p.W1.mean() == pytest.approx(0.1, abs=0.002)
    assert p.W1.std() == pytest.approx(0.1, abs=0.002)
    assert p.W2.mean() == pytest.approx(0.1, abs=0.015)
    assert p.W2.std() == pytest.approx(0.1, abs=0.015)
    assert not p.b1.any() and not p.b2.any()


def test_linear_models_start_at_zero() -> None:
    for model in ("numpy_perceptron", "numpy_logreg"):
        weights = nm.build(model, config(model), make_splits(n=8)).state_dict()["W"]
        assert weights.shape == (N_CLASSES, 785) and not weights.any()


@pytest.mark.parametrize(("model", "lr", "dtype"), [
    ("numpy_mlp", 1e30, "float32"), ("numpy_logreg", 1e38, "float32"),
    ("numpy_mlp", 1e300, "float64"), ("numpy_logreg", 1e306, "float64")])
def test_a_huge_learning_rate_diverges_without_raising(model: str, lr: float, dtype: str
                                                       ) -> None:
    learner = nm.build(model, config(model, learning_rate=lr, epochs=3, dtype=dtype),
                       make_splits())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even a RuntimeWarning escapes
        records = list(fit(learner, epochs=3))
        evaluation = learner.evaluate("test")
    assert len(records) == 1 and records[0].diverged
    assert not np.isfinite(records[0].metrics["train/loss"])
    assert evaluation.predictions.shape == (100,)


# ------------------------------------------------------------------ evaluation


@pytest.mark.parametrize("model", MODELS)
def test_evaluation_agrees_with_the_per_sample_math(model: str) -> None:
    data = make_splits()
    learner = nm.build(model, config(model, learning_rate=0.01), data, dtype=np.float64)
    learner.train_epoch()
    result = learner.evaluate("val")
    x = data.x_val.astype(np.float64)
    ws = nmath.Workspace(200, np.float64)
    if model == "numpy_mlp":
        losses = [nmath.mlp_backprop(learner.params, xi, int(yi), ws)
                  for xi, yi in zip(x, data.y_val, strict=True)]
        hidden = np.maximum(x @ learner.params.W1.T + learner.params.b1, 0)
        logits = hidden @ learner.params.W2.T + learner.params.b2
    else:
        logits = add_bias(x) @ learner.state_dict()["W"].T  # the homework's bias feature
        picked = logits[np.arange(len(x)), data.y_val]
        losses = (logits.max(axis=1) - picked if model == "numpy_perceptron"
                  else np.log(np.exp(logits).sum(axis=1)) - picked)
    assert result.loss == pytest.approx(np.mean(losses), rel=1e-9)
    np.testing.assert_array_equal(result.predictions, logits.argmax(axis=1))
    assert result.acc == pytest.approx(np.mean(logits.argmax(axis=1) == data.y_val))


def test_evaluation_works_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    learner = nm.build("numpy_mlp", config("numpy_mlp"), make_splits())
    whole = learner.evaluate("train")
    monkeypatch.setattr(nm, "_EVAL_ROWS", 7)
    blocked = learner.evaluate("train")
    np.testing.assert_array_equal(blocked.predictions, whole.predictions)
    assert blocked.loss == pytest.approx(whole.loss, rel=1e-6)


# ------------------------------------------------------------------ configuration


def test_options_only_torch_implements_are_refused() -> None:
    with pytest.raises(ValidationError, match="dropout = 0.2"):
        nm.build("numpy_mlp", config("numpy_mlp", dropout=0.2), make_splits(n=8))
    with pytest.raises(UserError, match="expected one of"):
        nm.build("numpy_svm", config("numpy_mlp"), make_splits(n=8))


def test_hidden_size_comes_from_the_config() -> None:
    learner = nm.build("numpy_mlp", config("numpy_mlp", hidden_size=13), make_splits(n=8))
    assert learner.state_dict()["W1"].shape == (13, 784)


@pytest.mark.parametrize("model", MODELS)
def test_a_trial_trains_in_float64_unless_it_asks_for_float32(model: str) -> None:
    from pipeline.models import build_learner  # the registry, as a trial builds its learner

    data = make_splits(n=40)
    for written, expected in [({}, np.float64), ({"dtype": "float32"}, np.float32)]:
        trial = config(model, learning_rate=0.01, hidden_size=8, **written)
        assert trial.dtype == np.dtype(expected).name
        learner = build_learner(trial, data)
        learner.train_epoch()
        params = [a for k, a in learner.get_state().items() if k.startswith("param/")]
        params += list(learner.state_dict().values())
        assert params and all(a.dtype == expected for a in params), written
        assert all(np.isfinite(a).all() for a in params)
