"""Seconds per training epoch: the numpy MLP's in-place BLAS path against the homework-style loop
(float64, per-sample forward/backward, `W -= lr * np.outer(...)`), from the same initial weights
in the same sample order, plus the torch models' figures from bench/torch_speed.py.

Prints one JSON object. Data: random OCT-like images of the full training-set shape (97,477 x 784)
unless --n-train says otherwise; figures are s/epoch at that size, nothing is extrapolated.
BLAS runs on one thread, as in a one-CPU Ray trial. Keys: s/epoch of the reference and of the
fast path in float64 (the numpy models' default, the homework's precision) and in float32 (the
opt-in `dtype: float32`), the speedups over the reference, how much faster float32 is than
float64, the max abs weight differences after the epoch against the reference started from the
same weights.
Run: .venv/bin/python bench/epoch_speed.py [--only numpy|torch] [--n-train 20000] [--seed 0]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time

import numpy as np
from threadpoolctl import threadpool_limits

from pipeline.config import TrialConfig
from pipeline.data import N_CLASSES, N_FEATURES, DatasetIdentity, Splits
from pipeline.models.engines import numpy_models

FULL_TRAIN = 97_477
EVAL_ROWS = 1_000
LEARNING_RATE = 0.001  # the homework's MLP


def make_splits(n_train: int, seed: int) -> Splits:
    """Dark class-dependent blobs plus noise, quantised like pixel / 256 (float32, read-only)."""
    rng = np.random.default_rng(seed)
    templates = rng.random((N_CLASSES, N_FEATURES), dtype=np.float32) * 0.4
    n = n_train + 2 * EVAL_ROWS
    y = rng.integers(0, N_CLASSES, n)
    x = templates[y]
    x += rng.standard_normal((n, N_FEATURES), dtype=np.float32) * 0.1
    np.clip(x, 0, 255 / 256, out=x)
    np.floor(x * 256, out=x)
    x /= 256
    for array in (x, y):
        array.flags.writeable = False
    a, b = n_train, n_train + EVAL_ROWS
    identity = DatasetIdentity("bench-random", "", "hw1", n_train, EVAL_ROWS, EVAL_ROWS)
    return Splits(x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:], identity)


def reference_epoch(p: dict[str, np.ndarray], x_all: np.ndarray, y_all: np.ndarray,
                    order: np.ndarray, lr: float) -> float:
    """The homework-style loop, float64, updating `p` in place; returns the summed loss."""
    total = 0.0
    for i in order:
        x, y = x_all[i].astype(np.float64), y_all[i]
        h_pre = p["W1"] @ x + p["b1"]
        h = np.maximum(h_pre, 0)
        z = p["W2"] @ h + p["b2"]
        probs = np.exp(z - z.max())
        probs /= probs.sum()
        total -= np.log(probs[y])
        dz = probs.copy()
        dz[y] -= 1
        dh = (p["W2"].T @ dz) * (h_pre > 0)
        p["W2"] -= lr * np.outer(dz, h)
        p["b2"] -= lr * dz
        p["W1"] -= lr * np.outer(dh, x)
        p["b1"] -= lr * dh
    return float(total)


def timed_fast_epoch(data: Splits, seed: int, dtype: str) -> dict:
    """Build the pipeline's numpy MLP as a trial of that `dtype` would and time one train_epoch;
    returns the time, the initial and trained weights and the epoch's sample order (replayed
    from a copy of its generator)."""
    config = TrialConfig(study="bench", model="numpy_mlp", seed=seed, epochs=1,
                         learning_rate=LEARNING_RATE, dtype=dtype)
    learner = numpy_models.build("numpy_mlp", config, data)
    initial = learner.state_dict()
    order = numpy_models.epoch_order(copy.deepcopy(learner.rng), len(data.y_train))
    start = time.perf_counter()
    loss = learner.train_epoch()
    elapsed = time.perf_counter() - start
    if not math.isfinite(loss.total):
        raise SystemExit("the MLP diverged on the bench data: timings would not be comparable")
    return {"s": elapsed, "initial": initial, "trained": learner.state_dict(), "order": order,
            "loss": loss.total}


def max_abs_diff(trained: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> float:
    """Largest absolute difference over all parameter arrays."""
    return max(float(np.max(np.abs(trained[k] - reference[k]))) for k in reference)


def numpy_measurements(data: Splits, seed: int) -> dict[str, float]:
    """s/epoch of the fast path in float64 (the default) and float32 and of the reference
    loop, same start."""
    with threadpool_limits(limits=1, user_api="blas"):
        fast64 = timed_fast_epoch(data, seed, "float64")
        fast = timed_fast_epoch(data, seed, "float32")
        # The reference starts from exactly the float64 learner's initial weights, in the same
        # sample order: any difference after the epoch is rounding order, nothing else.
        reference = {name: array.copy() for name, array in fast64["initial"].items()}
        start = time.perf_counter()
        reference_loss = reference_epoch(reference, data.x_train, data.y_train, fast64["order"],
                                         LEARNING_RATE)
        reference_s = time.perf_counter() - start
    return {
        "reference_float64_s_per_epoch": round(reference_s, 3),
        "fast_float64_s_per_epoch": round(fast64["s"], 3),
        "fast_float32_s_per_epoch": round(fast["s"], 3),
        "speedup_float64": round(reference_s / fast64["s"], 2),
        "speedup_float32": round(reference_s / fast["s"], 2),
        # How much faster the opt-in `dtype: float32` is than the default float64.
        "float32_over_float64": round(fast64["s"] / fast["s"], 2),
        # After one epoch from the same start: float64 differs only by rounding order; float32
        # starts from the same weights rounded to float32 and computes in float32 throughout.
        "max_abs_weight_diff_float64": max_abs_diff(fast64["trained"], reference),
        "max_abs_weight_diff_float32": max_abs_diff(fast["trained"], reference),
        "max_abs_weight": max(float(np.max(np.abs(reference[k]))) for k in reference),
        "epoch_loss_sum_reference": round(reference_loss, 4),
        "epoch_loss_sum_float64": round(fast64["loss"], 4),
        "epoch_loss_sum_float32": round(fast["loss"], 4),
        "blas_threads": 1,
    }


def torch_section(device: str, n_train: int) -> dict:
    """The torch figures of bench/torch_speed.py, on its own random data of the same size."""
    import torch_speed  # bench/ is on sys.path when this file runs as a script

    return torch_speed.torch_measurements(device, n_train)


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, measure, print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("numpy", "torch"))
    parser.add_argument("--n-train", type=int, default=FULL_TRAIN)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="torch only")
    args = parser.parse_args(argv)
    if args.n_train < 1:
        parser.error(f"--n-train {args.n_train}: expected a positive number of samples")
    result: dict[str, object] = {"n_train": args.n_train}
    if args.only in (None, "numpy"):
        result["numpy_mlp"] = numpy_measurements(make_splits(args.n_train, args.seed), args.seed)
    if args.only in (None, "torch"):
        result["torch"] = torch_section(args.device, args.n_train)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
