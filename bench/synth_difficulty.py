"""How hard is the synthetic set? Train the homework's models on the full-size synthetic file.

Prints JSON with accuracies. Uses the project's models (pipeline.models) when they exist, plus
an Adam-trained 2-layer torch net as a ceiling check; else stand-ins: per-sample SGD with lr 0.001
is approximated by mini-batches of 16 with a *summed* loss and the same lr (16 per-sample steps ~
one summed step).
Run: .venv/bin/python bench/synth_difficulty.py [--epochs 20] [--seed 0] [--standins]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline import synthetic
from pipeline.data import Splits, load_splits


def perceptron(data: Splits, epochs: int, seed: int) -> float:
    """Multi-class perceptron, lr 1, per-sample updates (the homework's Q1.1a)."""
    x = np.hstack([data.x_train, np.ones((len(data.x_train), 1), np.float32)])
    w = np.zeros((4, x.shape[1]), np.float32)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        for i in rng.permutation(len(x)):
            guess = int(np.argmax(w @ x[i]))
            if guess != data.y_train[i]:
                w[data.y_train[i]] += x[i]
                w[guess] -= x[i]
    xv = np.hstack([data.x_val, np.ones((len(data.x_val), 1), np.float32)])
    return float(np.mean(np.argmax(xv @ w.T, axis=1) == data.y_val))


def torch_net(data: Splits, epochs: int, seed: int, hidden: int | None) -> float:
    """Logistic regression (hidden=None, zero init) or the homework's 1-hidden-layer ReLU MLP."""
    import torch

    torch.manual_seed(seed)
    if hidden is None:
        net = torch.nn.Linear(784, 4)
        torch.nn.init.zeros_(net.weight)
        torch.nn.init.zeros_(net.bias)
    else:
        net = torch.nn.Sequential(torch.nn.Linear(784, hidden), torch.nn.ReLU(),
                                  torch.nn.Linear(hidden, 4))
        for layer in (net[0], net[2]):
            torch.nn.init.normal_(layer.weight, 0.1, 0.1)  # the homework's N(0.1, 0.1^2)
            torch.nn.init.zeros_(layer.bias)
    opt = torch.optim.SGD(net.parameters(), lr=0.001)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(16):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx], reduction="sum").backward()
            opt.step()
    with torch.no_grad():
        pred = net(torch.from_numpy(data.x_val)).argmax(1).numpy()
    return float(np.mean(pred == data.y_val))


# The homework's three numpy models, plus a stronger torch net as a ceiling check (< 95%).
REAL_MODELS = (
    {"model": "numpy_perceptron", "learning_rate": 1.0},
    {"model": "numpy_logreg", "learning_rate": 0.001},
    {"model": "numpy_mlp", "learning_rate": 0.001},
    {"model": "torch_ffn", "learning_rate": 0.001, "optimizer": "adam", "batch_size": 64,
     "layers": 2, "hidden_size": 200},
)


def real_models(data: Splits, epochs: int, seed: int) -> dict[str, dict[str, float]]:
    """The project's models through the registry and the shared epoch loop."""
    from pipeline.config import TrialConfig
    from pipeline.models import build_learner
    from pipeline.train import fit

    results = {}
    for params in REAL_MODELS:
        config = TrialConfig(study="bench", epochs=epochs, seed=seed, **params)
        learner = build_learner(config, data)
        last = list(fit(learner, epochs))[-1].metrics
        results[config.model] = {"train": last.get("train/acc", float("nan")),
                                 "val": last.get("val/acc", float("nan")),
                                 "test_hw1": learner.evaluate("test").acc}
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--standins", action="store_true", help="torch stand-ins only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = synthetic.synthesize(Path(tmp) / "synthetic.npz", seed=args.seed)
        out: dict[str, object] = {"synth_seconds": round(time.perf_counter() - start, 1)}
        data = load_splits(path)
    out["majority_val_acc"] = float(np.mean(data.y_val == 3))
    try:
        if args.standins:
            raise ImportError("stand-ins requested")
        out["acc"] = real_models(data, args.epochs, args.seed)
        out["models"] = "pipeline models"
    except ImportError:
        out["models"] = "stand-ins (numpy perceptron, torch logreg/MLP, batch 16 summed loss)"
        out["val_acc"] = {
            "perceptron": perceptron(data, args.epochs, args.seed),
            "logreg": torch_net(data, args.epochs, args.seed, None),
            "mlp": torch_net(data, args.epochs, args.seed, 200),
        }
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
