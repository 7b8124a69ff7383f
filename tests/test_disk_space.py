"""Free space where a sweep writes (issue 14, item 5): refused at the start below the reserve,
and a running sweep stopped as soon as it runs low (the sweep itself: tests/test_interrupts.py)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from pipeline.disk_space import DiskWatch, LowSpace, low_space, require_free_space, written_dirs
from pipeline.errors import UserError

pytestmark = pytest.mark.fast


def test_low_space_names_the_first_place_below_the_reserve(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    assert low_space([tmp_path], reserve=1) is None
    low = low_space([tmp_path / "not" / "yet" / "made"], reserve=free * 2)
    assert low is not None and low.path == tmp_path / "not" / "yet" / "made"
    assert 0 < low.free <= free * 2
    assert str(low).startswith("only ") and "medgrid keeps" in str(low)


def test_require_free_space_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^only [0-9.]+ MB free on the disk of .*; expected more "
                                        "free space there"):
        require_free_space([tmp_path], reserve=2**62)
    require_free_space([tmp_path], reserve=0)


def test_a_file_system_without_a_size_is_not_called_full() -> None:
    """/proc reports 0 bytes free of 0: `sqlite:////proc/x.db` is refused as not writable, by
    the store check, rather than as a full disk."""
    assert low_space([Path("/proc/x.db")], reserve=2**62) is None


@pytest.mark.parametrize(("uri", "expected"), [
    ("sqlite:////data/runs/mlflow.db", ["ray_results", "mlruns", "/data/runs"]),
    ("http://mlflow:5000", ["ray_results"]),  # the server watches its own store
    ("postgresql://u@db/mlflow", ["ray_results", "mlruns"]),
])
def test_written_dirs(uri: str, expected: list[str]) -> None:
    assert written_dirs(Path("ray_results"), uri, Path("mlruns")) == [Path(p) for p in expected]


def test_disk_watch_calls_once_when_space_runs_low(tmp_path: Path) -> None:
    seen: list[LowSpace] = []
    called = threading.Event()

    def on_low(low: LowSpace) -> None:
        seen.append(low)
        called.set()

    with DiskWatch([tmp_path], on_low, every_s=0.01, reserve=2**62):
        assert called.wait(5)
    assert len(seen) == 1 and seen[0].path == tmp_path
    with DiskWatch([tmp_path], on_low, every_s=0.01, reserve=0):
        called.clear()
        assert not called.wait(0.1)  # plenty of room: never called
