"""Free disk space where a sweep writes: checked before it starts, watched while it runs.

A full disk used to surface as a trial's `OSError: [Errno 28]`, Ray retrying it, and the private
MLflow server failing its SQLite writes while the trials retried their requests for minutes;
the runs were left RUNNING because closing them is a write too. medgrid keeps a reserve instead:
a sweep does not start with less than `RESERVE_BYTES` free where it writes (the store, the
artifacts, Ray's results), and a running sweep is stopped, cleanly and resumably, as soon as the
free space falls below it, while there is still room to close its runs.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UserError
from pipeline.periodic import Periodic
from pipeline.tracking.server import is_remote
from pipeline.tracking.store import sqlite_path

RESERVE_BYTES = 16 * 2**20  # room to close the runs, flush Ray's state and write SQLite's journal
CHECK_EVERY_S = 2.0


@dataclass(frozen=True)
class LowSpace:
    """A place a sweep writes to, on a file system with less free space than the reserve."""

    path: Path
    free: int
    reserve: int

    def __str__(self) -> str:
        return (f"only {self.free / 2**20:.1f} MB free on the disk of {self.path} (medgrid keeps "
                f"{self.reserve / 2**20:.0f} MB free to close its runs)")


def _existing(path: Path) -> Path:
    """`path`, or the nearest directory above it that exists (where it would be created)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def written_dirs(storage: Path, tracking_uri: str, artifacts_dir: Path) -> list[Path]:
    """Where a sweep writes on this machine: Ray's results, the local store and its artifacts
    (a tracking server's store is the server's to watch)."""
    dirs = [storage]
    if not is_remote(tracking_uri):
        dirs.append(artifacts_dir)
        db = sqlite_path(tracking_uri)
        if db is not None:
            dirs.append(db.parent)
    return dirs


def low_space(paths: Iterable[Path], reserve: int | None = None) -> LowSpace | None:
    """The first of `paths` whose file system has less than `reserve` bytes free (default:
    `RESERVE_BYTES`), or None."""
    reserve = RESERVE_BYTES if reserve is None else reserve
    for path in paths:
        try:
            usage = shutil.disk_usage(_existing(path))
        except OSError:  # vanished meanwhile: the writes there will say what is wrong
            continue
        if usage.total == 0:  # /proc, /sys: no disk to measure; writing there fails on its own
            continue
        free = usage.free
        if free < reserve:
            return LowSpace(path, free, reserve)
    return None


def require_free_space(paths: Iterable[Path], reserve: int | None = None) -> None:
    """Refuse to start a sweep that has no room to write (one line, before anything starts)."""
    low = low_space(paths, reserve)
    if low is not None:
        raise UserError(f"{low}; expected more free space there (or --storage / --tracking-uri "
                        "on another disk)")


class DiskWatch(Periodic):
    """Calls `on_low(LowSpace)` once, from a daemon thread, when one of `paths` runs low."""

    def __init__(self, paths: Iterable[Path], on_low: Callable[[LowSpace], None],
                 every_s: float = CHECK_EVERY_S, reserve: int | None = None) -> None:
        watched = list(paths)

        def task() -> bool:
            low = low_space(watched, reserve)
            if low is not None:
                on_low(low)
            return low is not None  # once is enough: the sweep is stopping

        super().__init__(task, every_s, "medgrid-disk-watch")
