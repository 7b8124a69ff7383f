"""The torch models on a CUDA device: the full-batch step replayed as a CUDA graph trains exactly
like the eager step, and runs are reproducible from their seed. Skipped where torch sees no CUDA
device (the development machines and CI). On a GPU machine the `run_trial` tests of
test_torch_models.py (learning, divergence) run on CUDA too: trials pick it when present."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_torch_models import config, splits

from pipeline.models.engines import torch_models
from pipeline.trial import run_trial

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device"),
]


def cuda_learner(data, graph: bool, **overrides: object) -> torch_models.TorchLearner:
    cfg = config(**overrides)
    return torch_models.build(cfg.model, cfg, data, device="cuda", cuda_graph=graph)


@pytest.mark.parametrize("optimizer,lr,dropout", [("sgd", 0.1, 0.0), ("sgd", 0.1, 0.3),
                                                   ("adam", 1e-3, 0.3)])
def test_graph_replay_trains_like_the_eager_step(optimizer: str, lr: float,
                                                 dropout: float) -> None:
    # 100 samples in batches of 16: six graph replays and an eager partial batch per epoch.
    data = splits(n_train=100)
    options = dict(optimizer=optimizer, learning_rate=lr, dropout=dropout, batch_size=16,
                   layers=2)
    eager, graphed = cuda_learner(data, False, **options), cuda_learner(data, True, **options)
    assert graphed.loop.graph is not None and eager.loop.graph is None
    for _ in range(3):
        loss_eager, loss_graph = eager.train_epoch(), graphed.train_epoch()
        assert loss_graph.total == pytest.approx(loss_eager.total, rel=1e-5)
    for name, value in eager.state_dict().items():
        np.testing.assert_allclose(graphed.state_dict()[name], value, rtol=1e-5, atol=1e-6,
                                   err_msg=name)


def test_same_seed_same_run_on_cuda() -> None:
    data = splits(n_train=100)
    runs = [run_trial(config(batch_size=16, dropout=0.3, epochs=3), data) for _ in range(2)]
    first, second = ([{k: v for k, v in epoch.metrics.items() if k != "epoch_time_s"}
                      for epoch in run.history] for run in runs)
    assert first == second
    assert np.array_equal(runs[0].confusion, runs[1].confusion)
