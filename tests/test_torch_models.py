"""The torch models and their fast loop: structure, sampling, seeding, the exact SGD/Adam math
(against autograd + torch.optim), L2, dropout, evaluation, divergence."""

from __future__ import annotations

import contextlib
import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from pipeline.config import TrialConfig
from pipeline.data import N_CLASSES, N_FEATURES, DatasetIdentity, Splits
from pipeline.errors import UserError
from pipeline.models.engines import torch_loop, torch_models
from pipeline.trial import run_trial

pytestmark = pytest.mark.fast  # no Ray, no MLflow: `make test-fast`

HIDDEN = 8


def splits(n_train: int = 64, seed: int = 0, easy: bool = False) -> Splits:
    """Random pixel/256 data; `easy`: each class lights its own block of pixels."""
    rng = np.random.default_rng(seed)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, N_CLASSES, n)
        x = rng.integers(0, 256, (n, N_FEATURES)) / 256
        if easy:
            blocks = np.arange(N_FEATURES) // (N_FEATURES // N_CLASSES)
            x = 0.5 * x + 0.5 * (blocks[None, :] == y[:, None])
        return x.astype(np.float32), y

    (xt, yt), (xv, yv), (xs, ys) = split(n_train), split(40), split(30)
    return Splits(xt, yt, xv, yv, xs, ys, DatasetIdentity("synthetic", "", "hw1", n_train, 40, 30))


def config(**overrides: object) -> TrialConfig:
    base = dict(study="t", model="torch_ffn", epochs=2, learning_rate=0.1, batch_size=8)
    values = {**base, **overrides}
    if values["model"] == "torch_ffn":
        values.setdefault("hidden_size", HIDDEN)
    return TrialConfig(**values)


def build(data: Splits, path: torch_models.TrainPath = "auto", **overrides: object
          ) -> torch_models.TorchLearner:
    cfg = config(**overrides)
    return torch_models.build(cfg.model, cfg, data, device="cpu", path=path)


def weights(learner: torch_models.TorchLearner) -> dict[str, np.ndarray]:
    return learner.state_dict()


# ------------------------------------------------------------------ structure
@pytest.mark.parametrize("layers", [1, 2])
def test_ffn_is_linear_activation_dropout_blocks_then_output(layers: int) -> None:
    model = torch_models.FeedforwardNetwork(N_CLASSES, N_FEATURES, HIDDEN, layers, "tanh", 0.3)
    kinds = [type(m) for m in model.net]
    assert kinds == [nn.Linear, nn.Tanh, nn.Dropout] * layers + [nn.Linear]
    widths = [(m.in_features, m.out_features) for m in model.net if isinstance(m, nn.Linear)]
    assert widths == [(N_FEATURES, HIDDEN)] + [(HIDDEN, HIDDEN)] * (layers - 1) + [
        (HIDDEN, N_CLASSES)]
    assert all(m.p == 0.3 for m in model.net if isinstance(m, nn.Dropout))
    assert model(torch.zeros(5, N_FEATURES)).shape == (5, N_CLASSES)


def test_logreg_is_one_linear_layer_and_state_dict_has_torch_shapes() -> None:
    learner = build(splits(), model="torch_logreg")
    assert [type(m) for m in learner.model.modules()][1:] == [nn.Linear]
    state = weights(learner)
    assert {k: v.shape for k, v in state.items()} == {
        "linear.weight": (N_CLASSES, N_FEATURES), "linear.bias": (N_CLASSES,)}
    assert all(isinstance(v, np.ndarray) and v.flags.c_contiguous for v in state.values())


def test_logreg_rejects_ffn_only_settings_and_unknown_names() -> None:
    with pytest.raises(ValidationError, match="dropout"):
        build(splits(), model="torch_logreg", dropout=0.2)
    with pytest.raises(UserError, match="torch_mlp"):
        torch_models.build("torch_mlp", config(), splits())


# ------------------------------------------------------------------ sampling and seeding
def test_every_sample_once_per_epoch_with_the_partial_batch_last(monkeypatch) -> None:
    seen: list[torch.Tensor] = []
    fill = torch_loop.Batch.fill
    monkeypatch.setattr(torch_loop.Batch, "fill",
                        lambda self, x, y, index, g: (seen.append(index.clone()),
                                                      fill(self, x, y, index, g)))
    learner = build(splits(n_train=37), batch_size=8)
    orders = []
    for _ in range(2):
        seen.clear()
        loss = learner.train_epoch()
        assert [len(i) for i in seen] == [8, 8, 8, 8, 5]
        order = torch.cat(seen)
        assert sorted(order.tolist()) == list(range(37))
        orders.append(order)
        assert loss.mean == pytest.approx(loss.total / 5)
    assert not torch.equal(orders[0], orders[1])  # a fresh order each epoch


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    data = splits(n_train=37)
    runs = {}
    for name, seed in [("a", 1), ("b", 1), ("c", 2)]:
        learner = build(data, seed=seed, dropout=0.3)
        for _ in range(2):
            learner.train_epoch()
        runs[name] = weights(learner)
    assert all(np.array_equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not all(np.array_equal(runs["a"][k], runs["c"][k]) for k in runs["a"])


# ------------------------------------------------------------------ the math, against torch
REFERENCE_CASES = [
    dict(model="torch_ffn"),
    dict(model="torch_ffn", layers=2, activation="tanh", l2_decay=0.01),
    dict(model="torch_logreg", l2_decay=0.001),
    dict(model="torch_ffn", optimizer="adam", learning_rate=0.01, l2_decay=0.001),
    dict(model="torch_ffn", layers=2, optimizer="adam", learning_rate=0.01),
]


@pytest.mark.parametrize("case", REFERENCE_CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_epochs_equal_the_homework_autograd_loop_in_the_same_order(case: dict) -> None:
    """Two epochs (37 samples, batches of 8 and a last one of 5) equal autograd + torch.optim
    visiting the samples in the same seeded order."""
    data = splits(n_train=37)
    learner = build(data, **case)
    cfg = config(**case)
    reference = copy.deepcopy(learner.model)
    optimizer_cls = torch.optim.SGD if cfg.optimizer == "sgd" else torch.optim.Adam
    optimizer = optimizer_cls(reference.parameters(), lr=cfg.learning_rate,
                              weight_decay=cfg.l2_decay)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    order = torch.Generator().manual_seed(cfg.seed)
    for _ in range(2):
        total = 0.0
        for batch in torch.randperm(37, generator=order).split(cfg.batch_size):
            optimizer.zero_grad()
            loss = F.cross_entropy(reference(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            total += loss.item()
        assert learner.train_epoch().total == pytest.approx(total, rel=1e-5)
    for name, value in reference.state_dict().items():
        np.testing.assert_allclose(weights(learner)[name], value.numpy(), rtol=1e-5, atol=1e-6)


def float64_model(layers: int, activation: str, dropout: float) -> nn.Module:
    torch.manual_seed(0)
    model = torch_models.FeedforwardNetwork(N_CLASSES, N_FEATURES, HIDDEN, layers, activation,
                                            dropout).double()
    torch_models.relayout(model)
    return model


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_backprop_with_dropout_equals_autograd_with_the_same_masks(activation: str) -> None:
    p = 0.5
    model = float64_model(2, activation, p)
    reference = copy.deepcopy(model)
    x = torch.rand(6, N_FEATURES, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 1, 2])
    noise = [torch.rand(6, HIDDEN, dtype=torch.float64) for _ in range(2)]
    masks = iter([(u >= p).double() / (1 - p) for u in noise])
    backprop = torch_loop.Backprop(torch_models.linears(model), activation, p)
    loss = backprop(x, y[:, None], noise)
    h = x
    for module in reference.net:  # nn.Dropout's rule, with our masks instead of its draws
        h = h * next(masks) if isinstance(module, nn.Dropout) else module(h)
    expected = F.cross_entropy(h, y)
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    for ours, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_one_float64_step_equals_torch_optim(optimizer: str) -> None:
    lr, decay = 0.05, 0.01
    model = float64_model(2, "relu", 0.0)
    reference = copy.deepcopy(model)
    x = torch.rand(5, N_FEATURES, dtype=torch.float64)
    y = torch.tensor([3, 0, 1, 2, 3])
    sgd = torch_loop.Sgd(lr, decay) if optimizer == "sgd" else None
    torch_loop.Backprop(torch_models.linears(model), "relu", 0.0, sgd)(x, y[:, None], [])
    if sgd is None:
        torch_loop.AdamUpdate(list(model.parameters()), lr, decay)()
    optimizer_cls = torch.optim.SGD if sgd else torch.optim.Adam
    torch_optimizer = optimizer_cls(reference.parameters(), lr=lr, weight_decay=decay)
    F.cross_entropy(reference(x), y).backward()
    torch_optimizer.step()
    for ours, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)


def test_l2_weight_decay_shrinks_each_weight_by_lr_times_lambda() -> None:
    lr, lam = 0.1, 0.01
    x = torch.rand(4, N_FEATURES, dtype=torch.float64)
    y = torch.tensor([[0], [1], [2], [3]])
    after = {}
    for decay in (0.0, lam):
        model = float64_model(1, "relu", 0.0)
        start = [p.detach().clone() for p in model.parameters()]
        sgd = torch_loop.Sgd(lr, decay)
        torch_loop.Backprop(torch_models.linears(model), "relu", 0.0, sgd)(x, y, [])
        after[decay] = [p.detach() for p in model.parameters()]
    for w0, plain, decayed in zip(start, after[0.0], after[lam], strict=True):
        torch.testing.assert_close(decayed - plain, -lr * lam * w0, rtol=1e-9, atol=1e-15)


class FakeCudaGraph:
    """CPU stand-in for torch.cuda.CUDAGraph: `replay` re-runs the step it stands for."""

    replay_step = None

    def replay(self) -> None:
        FakeCudaGraph.replay_step()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_cuda_graph_bookkeeping_leaves_training_as_eager(optimizer: str, monkeypatch) -> None:
    """The capture's warm-up steps must not leak into training: with the CUDA calls faked on
    CPU (capture runs the step eagerly, replay re-runs it), results equal the eager loop."""
    stream = type("FakeStream", (), {"wait_stream": lambda self, other: None})
    monkeypatch.setattr(torch.cuda, "Stream", stream)
    monkeypatch.setattr(torch.cuda, "current_stream", stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "graph", lambda g: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeCudaGraph)
    data = splits(n_train=37)
    eager, graphed = (build(data, optimizer=optimizer, dropout=0.3) for _ in range(2))
    parts = graphed.loop
    graphed.loop = torch_loop.EpochLoop(parts.backprop, parts.update, *graphed.splits["train"],
                                        8, torch.Generator().manual_seed(42), cuda_graph=True)
    FakeCudaGraph.replay_step = lambda: graphed.loop._step(graphed.loop.full)
    for _ in range(2):
        assert graphed.train_epoch() == eager.train_epoch()
    assert all(np.array_equal(v, weights(graphed)[k]) for k, v in weights(eager).items())


# ------------------------------------------------------------------ evaluation
def test_evaluation_is_in_eval_mode_and_leaves_the_model_untouched() -> None:
    data = splits(n_train=37)
    learner = build(data, dropout=0.5)
    learner.train_epoch()
    before = weights(learner)
    first, second = learner.evaluate("val"), learner.evaluate("val")
    assert first.loss == second.loss and np.array_equal(first.predictions, second.predictions)
    assert all(np.array_equal(before[k], v) for k, v in weights(learner).items())
    assert learner.model.training  # training goes on with dropout
    learner.model.eval()
    with torch.no_grad():
        logits = learner.model(torch.from_numpy(data.x_val))
    y = torch.from_numpy(data.y_val)
    assert first.loss == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert first.acc == pytest.approx((logits.argmax(1) == y).double().mean().item())


@pytest.mark.parametrize("optimizer,lr", [("adam", 1e-3), ("sgd", 0.1)])
def test_training_learns_separable_data(optimizer: str, lr: float) -> None:
    result = run_trial(config(optimizer=optimizer, learning_rate=lr, epochs=3, batch_size=16,
                              dropout=0.2), splits(n_train=256, easy=True))
    assert not result.diverged
    assert result.final_metrics["val/acc"] > 0.9 and result.test_acc > 0.9


# ------------------------------------------------------------------ divergence, data
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_huge_learning_rate_is_reported_as_diverged_not_raised(optimizer: str) -> None:
    data = splits()
    result = run_trial(config(learning_rate=1e30, optimizer=optimizer, epochs=5), data)
    assert result.diverged and len(result.history) == 1
    assert not np.isfinite(result.history[0].metrics["train/loss"])
    # NaN weights predict nothing worth a number: no test accuracy, no confusion counts.
    assert np.isnan(result.test_acc) and result.confusion.sum() == 0
    assert result.val_correct is None


def test_read_only_arrays_are_used_in_place_without_warnings() -> None:
    data = splits(n_train=37)
    for array in (data.x_train, data.y_train):
        array.flags.writeable = False  # as Ray's object store hands them out
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        learner = build(data)
        learner.train_epoch()
    assert learner.splits["train"][0].data_ptr() == data.x_train.ctypes.data


# ------------------------------------------------------------------ autograd and the fast path
def bn_model() -> nn.Module:
    """A module the fast loop does not know: BatchNorm between the Linear layers."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(N_FEATURES, HIDDEN), nn.BatchNorm1d(HIDDEN), nn.ReLU(),
                         nn.Dropout(0.2), nn.Linear(HIDDEN, N_CLASSES))


def learner_for(model: nn.Module, data: Splits, path: torch_models.TrainPath = "auto",
                **overrides: object) -> torch_models.TorchLearner:
    return torch_models.TorchLearner(model, config(**overrides), data, torch.device("cpu"),
                                     cuda_graph=False, path=path)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_batchnorm_model_trains_every_parameter_and_its_running_stats(optimizer: str) -> None:
    learner = learner_for(bn_model(), splits(n_train=37), optimizer=optimizer, l2_decay=1e-3)
    assert learner.path == "autograd"
    before = {k: v.copy() for k, v in learner.get_state().items()
              if k.startswith(("param/", "buffer/"))}
    assert {k for k in before if k.startswith("buffer/")} == {
        "buffer/1.running_mean", "buffer/1.running_var", "buffer/1.num_batches_tracked"}
    learner.train_epoch()
    after = learner.get_state()
    unchanged = [k for k, v in before.items() if np.array_equal(v, after[k])]
    assert unchanged == []
    assert int(after["buffer/1.num_batches_tracked"]) == 5  # 37 samples, batches of 8


def test_the_fast_path_refuses_batchnorm_naming_the_layer() -> None:
    with pytest.raises(torch_loop.NotAPlainStack, match=r"BatchNorm1d \(1\)"):
        torch_loop.plain_stack(bn_model())
    with pytest.raises(torch_loop.NotAPlainStack, match="BatchNorm1d"):
        learner_for(bn_model(), splits(), path="fast")


@pytest.mark.parametrize(("model", "named"), [
    (nn.Sequential(nn.Linear(N_FEATURES, 4, bias=False)), "without bias"),
    (nn.Sequential(nn.Linear(N_FEATURES, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(),
                   nn.Linear(8, 4)), "mixed"),
    (nn.Sequential(nn.Linear(N_FEATURES, 8), nn.Linear(8, 4)), r"Linear at 1: expected "
     "activation"),
    (nn.Sequential(nn.Linear(N_FEATURES, 8), nn.ReLU()), "does not end with a Linear"),
    (nn.Sequential(nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, 2, 3)), "Unflatten"),
])
def test_the_fast_path_refuses_what_its_backward_pass_does_not_implement(
        model: nn.Module, named: str) -> None:
    with pytest.raises(torch_loop.NotAPlainStack, match=named):
        torch_loop.plain_stack(model)


def test_a_custom_forward_is_never_taken_for_a_plain_stack() -> None:
    class Doubled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(N_FEATURES, N_CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * self.linear(x)

    with pytest.raises(torch_loop.NotAPlainStack, match="Doubled"):
        torch_loop.plain_stack(Doubled())
    assert learner_for(Doubled(), splits()).path == "autograd"


@pytest.mark.parametrize("model", ["torch_logreg", "torch_ffn"])
def test_the_homework_models_take_the_fast_path(model: str) -> None:
    assert build(splits(), model=model, dropout=0.0).path == "fast"


@pytest.mark.parametrize(("optimizer", "l2", "dropout"),
                         [("sgd", 0.0, 0.0), ("sgd", 1e-2, 0.0), ("adam", 1e-2, 0.0),
                          ("sgd", 0.0, 0.3)])
def test_autograd_and_the_fast_path_train_the_same(optimizer: str, l2: float,
                                                     dropout: float) -> None:
    """Same seed, same order, same SGD/Adam/L2: the standard loop and the fused one agree
    (dropout masks come from different draws, so with dropout only the loss scale is checked)."""
    data = splits(n_train=37)
    fast, slow = (build(data, optimizer=optimizer, l2_decay=l2, dropout=dropout, path=p)
                  for p in ("fast", "autograd"))
    assert (fast.path, slow.path) == ("fast", "autograd")
    loss_fast, loss_slow = fast.train_epoch(), slow.train_epoch()
    if dropout:
        assert loss_slow.mean == pytest.approx(loss_fast.mean, rel=0.2)
        return
    assert loss_slow.mean == pytest.approx(loss_fast.mean, rel=1e-5)
    for key, value in weights(fast).items():
        np.testing.assert_allclose(weights(slow)[key], value, rtol=1e-4, atol=1e-6)


def test_autograd_training_is_seeded_and_resumes_bitwise() -> None:
    data = splits(n_train=37)
    first, again = learner_for(bn_model(), data), learner_for(bn_model(), data)
    first.train_epoch()
    again.train_epoch()
    state = first.get_state()
    assert all(np.array_equal(v, again.get_state()[k]) for k, v in state.items())
    restored = learner_for(bn_model(), data, seed=7)
    restored.set_state(state)
    first.train_epoch()
    restored.train_epoch()
    assert all(np.array_equal(v, restored.get_state()[k]) for k, v in first.get_state().items())


def test_a_model_the_fast_path_does_not_know_trains_with_autograd() -> None:
    learner = build(splits(), model="torch_cnn")
    assert learner.path == "autograd"
    with pytest.raises(torch_loop.NotAPlainStack, match="Unflatten"):
        build(splits(), model="torch_cnn", path="fast")
