"""Seconds per epoch of the torch FFN: the homework's loop vs the pipeline's loop, one run.

The homework loop is written out here as hw1 did it: a per-item Dataset, DataLoader(shuffle=True),
zero_grad / backward / step and `loss.item()` every step. Ours is
`pipeline.models.engines.torch_models` (preloaded tensors, hand-written backprop, one sync per
epoch; CUDA graph on GPU). Same random
data (OCTMNIST's training-set size), same model (1 hidden layer of 200, ReLU, dropout 0.3),
SGD lr 0.1. Timings are noisy on shared machines: read the ratios.

    python bench/torch_speed.py [--device cpu|cuda] [--n-train N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from pipeline.config import TrialConfig
from pipeline.data import N_CLASSES, N_FEATURES, DatasetIdentity, Splits
from pipeline.models.engines import torch_models

FULL_TRAIN = 97_477
WARMUP = 2_000  # samples run once before timing (allocator, MKL / cuBLAS handles)
DEFAULT_THREADS_SAMPLES = 16_384  # prefix timed for the homework loop at default threads


class ItemDataset(torch.utils.data.Dataset):
    """The homework's dataset: one (x, y) pair per __getitem__."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def random_splits(n_train: int, seed: int = 0) -> Splits:
    """Random pixels/256 and labels of the given size, with tiny val and test splits."""
    rng = np.random.default_rng(seed)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = (rng.integers(0, 256, (n, N_FEATURES)) / 256).astype(np.float32)
        return x, rng.integers(0, N_CLASSES, n)

    (xt, yt), (xv, yv), (xs, ys) = split(n_train), split(64), split(64)
    return Splits(xt, yt, xv, yv, xs, ys, DatasetIdentity("synthetic", "", "hw1", n_train, 64, 64))


def config(batch_size: int) -> TrialConfig:
    """The benchmarked trial: the homework's FFN with dropout 0.3, SGD lr 0.1."""
    return TrialConfig(study="bench", model="torch_ffn", epochs=1, learning_rate=0.1,
                       batch_size=batch_size, hidden_size=200, layers=1, dropout=0.3)


def homework_epoch(data: Splits, batch_size: int, device: str, n: int) -> Callable[[], None]:
    """One epoch of hw1's loop over the first `n` training samples, as a callable."""
    torch.manual_seed(0)
    model = torch_models.FeedforwardNetwork(N_CLASSES, N_FEATURES, 200, 1, "relu", 0.3)
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    criterion = nn.CrossEntropyLoss()
    dataset = ItemDataset(torch.tensor(data.x_train[:n]), torch.tensor(data.y_train[:n]))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True)

    def epoch() -> None:
        model.train()
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            loss.item()

    return epoch


def ours_epoch(data: Splits, batch_size: int, device: str, graph: bool = True
               ) -> Callable[[], object]:
    """One epoch of the pipeline's loop, as a callable."""
    learner = torch_models.build("torch_ffn", config(batch_size), data, device=device,
                                 cuda_graph=graph)
    return learner.train_epoch


def seconds(epoch: Callable[[], object], device: str, threads: int | None = None) -> float:
    """Wall time of one call (device work included), optionally with `threads` threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        _sync(device)
        start = time.perf_counter()
        epoch()
        _sync(device)
        return time.perf_counter() - start
    finally:
        torch.set_num_threads(previous)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def batch_figures(data: Splits, batch_size: int, device: str) -> dict[str, float]:
    """Seconds per epoch of each loop at one batch size, and the speed-ups."""
    n = len(data.y_train)
    row = {}
    if device == "cpu":
        # As hw1 ran it (torch's default threads). Beside other busy processes that can be
        # 10x slower, so it is timed on a prefix of the epoch and scaled (cost per step is flat).
        part = min(n, DEFAULT_THREADS_SAMPLES)
        row["homework_s_per_epoch"] = seconds(homework_epoch(data, batch_size, device, part),
                                              device) * n / part
        row["homework_1thread_s_per_epoch"] = seconds(
            homework_epoch(data, batch_size, device, n), device, threads=1)
    else:
        row["homework_s_per_epoch"] = seconds(homework_epoch(data, batch_size, device, n), device)
    row["ours_s_per_epoch"] = seconds(ours_epoch(data, batch_size, device), device)
    row["speedup_vs_homework"] = row["homework_s_per_epoch"] / row["ours_s_per_epoch"]
    if device == "cpu":
        row["speedup_vs_homework_1thread"] = (row["homework_1thread_s_per_epoch"]
                                              / row["ours_s_per_epoch"])
    else:
        row["ours_eager_s_per_epoch"] = seconds(ours_epoch(data, batch_size, device, graph=False),
                                                device)
        row["graph_speedup_vs_eager"] = row["ours_eager_s_per_epoch"] / row["ours_s_per_epoch"]
    return {k: round(v, 3) for k, v in row.items()}


def warm_up(data: Splits, device: str) -> None:
    """Run both loops once on a few samples, so that one-off set-up costs stay out of timings."""
    small = dataclasses.replace(data, x_train=data.x_train[:WARMUP], y_train=data.y_train[:WARMUP])
    homework_epoch(small, 16, device, WARMUP)()
    ours_epoch(small, 16, device)()


def torch_measurements(device: str, n_train: int) -> dict:
    """Seconds per epoch of the homework loop and ours (batch 16, and 1024 for information)."""
    data = random_splits(n_train)
    warm_up(data, device)
    return {
        "device": device if device == "cpu" else torch.cuda.get_device_name(),
        "n_train": n_train,
        "torch": torch.__version__,
        "default_threads": torch.get_num_threads(),
        "ours_cpu_threads": torch_models.CPU_THREADS,
        "batch_16": batch_figures(data, 16, device),
        "batch_1024": batch_figures(data, 1024, device),
    }


def main() -> None:
    """Parse the command line and print the measurements as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--n-train", type=int, default=FULL_TRAIN)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device visible to torch")
    print(json.dumps(torch_measurements(args.device, args.n_train), indent=2))


if __name__ == "__main__":
    main()
