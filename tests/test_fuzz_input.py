"""Hostile input, generated: whatever bytes or YAML structure a space file holds, and whatever
bytes or damage an npz file has, medgrid either accepts it or refuses it with a one-line
UserError (exit 2 at the CLI), never another exception, a hang or a huge allocation.

Deterministic (derandomized, no example database) so that CI never flakes; the deadline is
generous and only catches the unbounded cases (/dev/zero, "billion laughs", a huge declared
shape), which used to run for minutes or until MemoryError.
"""

from __future__ import annotations

import copy
import io
import tracemalloc
import zipfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import data
from pipeline.config import TRIAL_KEYS, load_space, planned_trials
from pipeline.errors import UserError
from pipeline.sweep import SweepOptions, plan_sweep

FUZZ = settings(max_examples=250, deadline=timedelta(seconds=5), derandomize=True,
                database=None, suppress_health_check=[HealthCheck.too_slow])
# A few kB of tiny arrays or YAML decode to well under 1 MB; a declared shape or an alias
# expansion that got through would allocate far more.
MAX_ALLOCATED = 64 * 2**20


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory for the whole module (hypothesis reruns a test body many times)."""
    return tmp_path_factory.mktemp("fuzz")


def accepted_or_one_line(call: Callable[[], object]) -> None:
    """`call()` succeeds or raises a UserError whose message is one non-empty line."""
    try:
        call()
    except UserError as exc:
        message = str(exc)
        assert message and "\n" not in message and "\r" not in message, repr(message)


# ----------------------------------------------------------------------------- spaces
SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
           | st.sampled_from(["torch_ffn", "numpy_mlp", "numpy_logreg", "relu", "adam",
                              "float32", "grid", "random", "optuna", "val/acc", "max"]))
KEYS = st.sampled_from(sorted(TRIAL_KEYS | {
    "name", "model", "seeds", "params", "variants", "search", "scheduler", "checkpoint_every",
    "description", "algorithm", "num_samples", "asha", "grace_period", "max_t",
    "loguniform", "uniform", "randint", "choice", "include"})) | st.text(max_size=10)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=25)
# A valid study with a few keys replaced by generated values, so that generated files get past
# the top-level checks into the validation of names, params, variants, search and scheduler.
VALID_STUDY = {"name": "s", "model": "torch_ffn", "seeds": [1, 2],
               "params": {"epochs": 2, "learning_rate": [0.1, 0.01], "batch_size": 16},
               "variants": [{}, {"dropout": 0.2}]}
NUMBERS = (st.integers(-1, 4) | st.floats(-1, 2) | st.sampled_from([True, 0.1, "1e-3", ".inf"])
           | st.lists(st.integers(1, 3) | st.floats(0, 1), min_size=1, max_size=3))
NAMES = st.sampled_from(["q2_lr", "v-1.2", "a/b", "x'y", "", "a b"]) | st.text(max_size=8)


@st.composite
def near_valid_studies(draw: st.DrawFn) -> dict:
    study = copy.deepcopy(VALID_STUDY)
    study["model"] = draw(st.sampled_from(["torch_ffn", "torch_logreg", "numpy_mlp"]))
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.sampled_from(["name", "drop", "top", "params", "variant"]))
        key, value = draw(KEYS), draw(NUMBERS | VALUES)
        params, variants = study.get("params"), study.get("variants")
        if where == "name":
            study["name"] = draw(NAMES)
        elif where == "top":
            study[key] = value
        elif not isinstance(params, dict) or not isinstance(variants, list):
            continue  # replaced by a generated value above
        elif where == "drop":
            params.pop(draw(st.sampled_from(sorted(VALID_STUDY["params"]))), None)
        elif where == "params":
            params[key] = value
        elif variants and isinstance(variants[0], dict):
            variants[0][key] = value
    return study


def _dump(value: object) -> str:
    return yaml.safe_dump(value, allow_unicode=True)


def plan_like_tune(space: Path) -> None:
    """What `medgrid tune` does with a space before anything launches: load and validate it,
    count its trials, and (small enough) plan every trial."""
    if planned_trials(load_space(space)) <= 200:
        plan_sweep(space, SweepOptions())


@FUZZ
@given(content=st.binary(max_size=2000))
def test_any_bytes_as_a_space_file(workdir: Path, content: bytes) -> None:
    space = workdir / "bytes.yaml"
    space.write_bytes(content)
    within_memory_bound(lambda: plan_like_tune(space))


@FUZZ
@given(value=VALUES)
def test_any_yaml_structure_as_a_space_file(workdir: Path, value: object) -> None:
    space = workdir / "any.yaml"
    space.write_text(_dump(value), encoding="utf-8")
    within_memory_bound(lambda: plan_like_tune(space))


@FUZZ
@given(study=near_valid_studies())
def test_any_study_shaped_file(workdir: Path, study: dict) -> None:
    space = workdir / "study.yaml"
    space.write_text(_dump(study), encoding="utf-8")
    within_memory_bound(lambda: plan_like_tune(space))


# -------------------------------------------------------------------------------- npz
def _npy_members() -> dict[str, bytes]:
    """The six members of a small valid file, as npy bytes."""
    rng = np.random.default_rng(0)
    members = {}
    for split, n in {"train": 4, "val": 2, "test": 2}.items():
        for key, array in [
                (f"{split}_images", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
                (f"{split}_labels", (np.arange(n, dtype=np.uint8) % 4).reshape(n, 1))]:
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array)
            members[key] = buffer.getvalue()
    return members


MEMBERS = _npy_members()


def _declare_length(npy: bytes, length: int) -> bytes:
    """`npy` with the first length of its declared shape set to `length` (e.g. (4, 28, 28) ->
    (10**12, 28, 28)), the header's space padding adjusted so that its length still agrees."""
    start = npy.index(b"'shape': (") + len(b"'shape': (")
    end = start
    while npy[end:end + 1].isdigit():
        end += 1
    text = str(length).encode()
    newline = npy.index(b"\n", end)
    grow = len(text) - (end - start)
    body = npy[end:newline]
    if grow > 0:
        body = body[:-grow]  # numpy pads headers to 64 bytes: room for any such length
    else:
        body += b" " * -grow
    return npy[:start] + text + body + npy[newline:]


@st.composite
def damaged_npz(draw: st.DrawFn) -> bytes:
    """A small valid file, some of whose arrays declare other lengths (zipped with correct
    CRCs, as a hostile file would be), then some bytes changed and perhaps cut short."""
    lengths = draw(st.dictionaries(st.sampled_from(sorted(MEMBERS)),
                                   st.integers(-10, 10**15), max_size=2))
    method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        for key, npy in MEMBERS.items():
            archive.writestr(f"{key}.npy", _declare_length(npy, lengths[key])
                             if key in lengths else npy)
    raw = bytearray(buffer.getvalue())
    for _ in range(draw(st.integers(0, 4))):
        raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]
    return bytes(raw)


def within_memory_bound(call: Callable[[], object]) -> None:
    """`accepted_or_one_line(call)`, holding at most MAX_ALLOCATED bytes at once (numpy reports
    its buffers to tracemalloc; a YAML bomb or a huge declared shape would go far past it)."""
    tracemalloc.start()
    try:
        accepted_or_one_line(call)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MAX_ALLOCATED, f"{peak:,} bytes allocated"


def _read_within_memory_bound(path: Path) -> None:
    """Read as `medgrid tune --test-split full` does, within the memory bound."""
    within_memory_bound(lambda: data.load_splits(path, test_split="full"))


@FUZZ
@given(content=st.binary(max_size=3000))
def test_any_bytes_as_an_npz_file(workdir: Path, content: bytes) -> None:
    path = workdir / "bytes.npz"
    path.write_bytes(content)
    _read_within_memory_bound(path)


@FUZZ
@given(content=damaged_npz())
def test_damaged_npz_file(workdir: Path, content: bytes) -> None:
    path = workdir / "damaged.npz"
    path.write_bytes(content)
    _read_within_memory_bound(path)
