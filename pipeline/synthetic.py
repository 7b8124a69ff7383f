"""A synthetic OCT-like stand-in for OCTMNIST, written in exactly MedMNIST's npz format.

Each image is a procedural 28x28 retinal B-scan: a dark vitreous above bright retinal layer
bands (nerve-fibre layer, inner retina, pigment layer, choroid) with random tilt, curvature,
vertical position, thickness, brightness and speckle. The classes differ the way the diseases do:
0 CNV (irregular raised pigment layer with a mass beneath), 1 DME (thickened retina with dark round
cysts), 2 drusen (small dome-shaped bumps under the pigment layer), 3 normal (smooth layers with a
central foveal dip). Sizes and class proportions default to OCTMNIST's.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data import KEYS, N_CLASSES, SYNTHETIC_MARKER
from pipeline.errors import UserError

# OCTMNIST's class counts (classes 0..3) per split; the test split is balanced.
OCTMNIST_COUNTS = {
    "train": (33_484, 10_213, 7_754, 46_026),
    "val": (3_721, 1_135, 862, 5_114),
    "test": (250, 250, 250, 250),
}
SIDE = 28
_CHUNK = 8192  # images rendered at once: bounds memory (~30 float32 arrays of CHUNK x 28 x 28)
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed zip timestamps: same seed -> same bytes

_ROWS = np.arange(SIDE, dtype=np.float32).reshape(1, SIDE, 1)
_COLS = np.arange(SIDE, dtype=np.float32).reshape(1, 1, SIDE)
_U = (_COLS - (SIDE - 1) / 2) / ((SIDE - 1) / 2)  # column position in [-1, 1]


def synthesize(
    out: Path,
    *,
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
) -> Path:
    """Write a synthetic OCTMNIST-format npz to `out` (atomically) and return its path."""
    out = Path(out)
    if not out.parent.is_dir():
        raise UserError(f"cannot write {out}: directory {out.parent} does not exist")
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    arrays: dict[str, np.ndarray] = {}
    for index, (split, n) in enumerate(sizes.items()):
        counts = split_counts(split, n)
        rng = np.random.default_rng([seed, index])
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = _make_split(rng, counts)
    _write_npz(out, arrays, comment=SYNTHETIC_MARKER + f" seed={seed}".encode())
    return out


def split_counts(split: str, n: int | None) -> tuple[int, ...]:
    """Images per class for a split of `n` images (OCTMNIST's counts when `n` is None)."""
    full = OCTMNIST_COUNTS[split]
    if n is None:
        return full
    if n < 0:
        raise UserError(f"synthetic {split} size {n} must be >= 0")
    return largest_remainder(n, np.asarray(full, dtype=np.float64))


def largest_remainder(n: int, weights: np.ndarray) -> tuple[int, ...]:
    """Integer shares of `n` proportional to `weights` that sum exactly to `n`."""
    quotas = n * weights / weights.sum()
    counts = np.floor(quotas).astype(np.int64)
    # Hand the leftover units to the largest fractional parts (ties: lower class first).
    order = np.argsort(-(quotas - counts), kind="stable")
    counts[order[: n - int(counts.sum())]] += 1
    return tuple(int(c) for c in counts)


def _make_split(rng: np.random.Generator, counts: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Images (N, 28, 28) uint8 and labels (N, 1) uint8 of one split, classes shuffled."""
    images = [_render_class(rng, cls, count) for cls, count in enumerate(counts)]
    labels = np.repeat(np.arange(N_CLASSES, dtype=np.uint8), counts)
    order = rng.permutation(len(labels))
    stacked = np.concatenate(images) if images else np.zeros((0, SIDE, SIDE), np.uint8)
    return stacked[order], labels[order].reshape(-1, 1)


def _render_class(rng: np.random.Generator, cls: int, count: int) -> np.ndarray:
    """`count` uint8 images of class `cls`, rendered in chunks."""
    chunks = [np.zeros((0, SIDE, SIDE), np.uint8)]
    for start in range(0, count, _CHUNK):
        n = min(_CHUNK, count - start)
        scan = _base_scan(rng, n)
        _DISEASES[cls](rng, scan)
        chunks.append(_finish(rng, _render(scan)))
    return np.concatenate(chunks)


# ------------------------------------------------------------------------------ anatomy
# The magnitudes below set how hard the set is; they were tuned with bench/synth_difficulty.py
# so the homework's models rank as on OCTMNIST (perceptron < logistic regression < MLP).
@dataclass
class _Scan:
    """One batch's anatomy: per-column layer rows (n, 1, 28) and per-pixel overlays."""

    ilm: np.ndarray  # row of the inner limiting membrane (top of the retina)
    rpe: np.ndarray  # row of the retinal pigment epithelium (bright lower band)
    gain: np.ndarray  # (n, 1, 1) overall brightness
    add: np.ndarray  # (n, 28, 28) extra reflectance (CNV mass)
    mul: np.ndarray  # (n, 28, 28) attenuation (DME cysts)


def _base_scan(rng: np.random.Generator, n: int) -> _Scan:
    """Healthy-looking layers with random position, tilt, curvature and thickness."""
    def draw(low: float, high: float) -> np.ndarray:
        return rng.uniform(low, high, (n, 1, 1)).astype(np.float32)

    centre = draw(6.0, 21.0) + draw(-5.0, 5.0) * _U + draw(-4.0, 4.0) * _U**2
    thickness = draw(6.5, 11.0)
    return _Scan(
        ilm=centre - thickness / 2,
        rpe=centre + thickness / 2,
        gain=draw(0.5, 1.5),
        add=np.zeros((n, SIDE, SIDE), np.float32),
        mul=np.ones((n, SIDE, SIDE), np.float32),
    )


def _bumps(rng: np.random.Generator, n: int, k: int, width: tuple, height: tuple,
           spread: float) -> np.ndarray:
    """Sum of `k` Gaussian bumps per image along the columns: (n, 1, 28)."""
    total = np.zeros((n, 1, SIDE), np.float32)
    for _ in range(k):
        at = rng.uniform(-spread, spread, (n, 1, 1))
        w = rng.uniform(*width, (n, 1, 1))
        h = rng.uniform(*height, (n, 1, 1))
        total += (h * np.exp(-0.5 * ((_U - at) / w) ** 2)).astype(np.float32)
    return total


def _blobs(rng: np.random.Generator, rows: np.ndarray, cols: np.ndarray,
           radius: tuple) -> np.ndarray:
    """Round Gaussian blobs centred at (rows, cols), each (n, 1, 1): (n, 28, 28) in [0, 1]."""
    r = rng.uniform(*radius, rows.shape).astype(np.float32)
    return np.exp(-0.5 * (((_ROWS - rows) / r) ** 2 + ((_COLS - cols) / r) ** 2))


def _normal(rng: np.random.Generator, scan: _Scan) -> None:
    """Smooth layers with the central foveal dip of the inner surface."""
    n = len(scan.ilm)
    scan.ilm += _bumps(rng, n, 1, (0.12, 0.22), (2.0, 3.5), 0.15)


def _dme(rng: np.random.Generator, scan: _Scan) -> None:
    """Thickened retina (shallow fovea) with one to three dark round cysts inside it."""
    n = len(scan.ilm)
    scan.ilm -= rng.uniform(0.5, 3.0, (n, 1, 1)).astype(np.float32)
    scan.ilm += _bumps(rng, n, 1, (0.1, 0.2), (0.0, 1.5), 0.2)
    for chance in (1.0, 0.6, 0.3):
        col = rng.uniform(7.0, 21.0, (n, 1, 1)).astype(np.float32)
        top = np.take_along_axis(scan.ilm, col.astype(np.intp), axis=2)
        bottom = np.take_along_axis(scan.rpe, col.astype(np.intp), axis=2)
        row = top + rng.uniform(0.35, 0.7, (n, 1, 1)).astype(np.float32) * (bottom - top)
        present = rng.random((n, 1, 1)) < chance
        scan.mul *= 1 - 0.6 * present * _blobs(rng, row, col, (1.0, 2.0))


def _drusen(rng: np.random.Generator, scan: _Scan) -> None:
    """Small dome-shaped bumps lifting the pigment layer; a shallower foveal dip."""
    n = len(scan.ilm)
    scan.ilm += _bumps(rng, n, 1, (0.12, 0.22), (1.0, 2.5), 0.15)
    scan.rpe -= _bumps(rng, n, 3, (0.06, 0.12), (0.3, 2.0), 0.7)


def _cnv(rng: np.random.Generator, scan: _Scan) -> None:
    """An irregular raised pigment layer with a reflective mass beneath; retina pushed up."""
    n = len(scan.ilm)
    lift = _bumps(rng, n, 1, (0.15, 0.3), (0.8, 3.0), 0.7)
    lift += _bumps(rng, n, 2, (0.05, 0.1), (0.0, 1.5), 0.5) * (lift > 1.0)  # ragged top
    scan.rpe -= lift
    scan.ilm -= 0.6 * lift
    # The mass fills the space between the lifted pigment layer and where it used to be.
    peak = np.argmax(lift, axis=2)[..., None]
    row = np.take_along_axis(scan.rpe + lift / 2, peak, axis=2)
    scan.add += 0.35 * _blobs(rng, row, peak.astype(np.float32), (1.2, 2.2))


_DISEASES = (_cnv, _dme, _drusen, _normal)


# ------------------------------------------------------------------------------ imaging
def _render(scan: _Scan) -> np.ndarray:
    """Reflectance (n, 28, 28) of the layers, in roughly [0, 1]."""
    def step(x: np.ndarray) -> np.ndarray:  # soft edge, ~1 pixel wide
        return 0.5 + 0.5 * np.tanh(1.25 * x)

    inside = step(_ROWS - scan.ilm) * step(scan.rpe - _ROWS)
    depth = np.clip((_ROWS - scan.ilm) / np.maximum(scan.rpe - scan.ilm, 1), 0, 1)
    # Inner retina: bright nerve-fibre layer at the top, darker nuclear layers below.
    retina = inside * (0.25 + 0.35 * np.exp(-((depth / 0.18) ** 2)))
    pigment = 0.9 * np.exp(-0.5 * ((_ROWS - scan.rpe) / 0.9) ** 2)
    choroid = 0.35 * step(_ROWS - scan.rpe - 1.5) * np.exp(-(_ROWS - scan.rpe) / 6)
    return (0.05 + (retina + choroid) * scan.mul + pigment + scan.add) * scan.gain


def _finish(rng: np.random.Generator, reflectance: np.ndarray) -> np.ndarray:
    """Speckle (multiplicative gamma) and sensor noise, then 8-bit pixels."""
    speckle = rng.gamma(2.5, 1 / 2.5, reflectance.shape).astype(np.float32)
    noise = rng.normal(0.0, 0.06, reflectance.shape).astype(np.float32)
    pixels = (reflectance * speckle + noise) * 200
    return np.clip(pixels, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------- writing
def _write_npz(out: Path, arrays: dict[str, np.ndarray], *, comment: bytes) -> None:
    """np.savez_compressed's layout with fixed timestamps, written to a temp file then renamed."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle, zipfile.ZipFile(handle, "w") as archive:
            for key in KEYS:
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, arrays[key], allow_pickle=False)
                info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                archive.writestr(info, buffer.getvalue())
            archive.comment = comment
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a data file is normally world-readable
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
