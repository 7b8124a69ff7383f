"""A task run every few seconds in a daemon thread for the length of a `with` block (the sweep's
heartbeat, its disk watch)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType


class Periodic:
    """Calls `task()` every `every_s` seconds while the context is open, until it returns True."""

    def __init__(self, task: Callable[[], bool], every_s: float, name: str) -> None:
        self._task, self._every_s = task, every_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        while not self._stopped.wait(self._every_s):
            if self._task():
                return

    def __enter__(self) -> Periodic:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
