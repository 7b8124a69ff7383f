"""A sweep whose standard output goes away (`medgrid tune ... | head`, a closed terminal pipe)
stops the way SIGTERM stops it: runs closed KILLED, one line on stderr naming the cause and the
`--resume` command, exit 1. Unix tools die of SIGPIPE there; Python ignores that signal, so a
print raises `BrokenPipeError` instead, wherever it happens to be (a progress line inside Tune's
loop, a note before Ray starts), and a sweep used to end with exit 0 having run nothing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from pipeline.interrupts import StopSignals

CAUSE = "its standard output was closed (the program reading it ended)"


class _Guarded:
    """`sys.stdout` for the sweep: writes pass through until the reader is gone, then the
    stream's descriptor is pointed at /dev/null (so no later write, Python's or a library's,
    fails again) and the sweep is asked to stop, once."""

    def __init__(self, stream: TextIO, stops: StopSignals) -> None:
        self._stream = stream
        self._stops = stops
        self.lost = False

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._lose()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._lose()

    def __getattr__(self, name: str) -> object:  # fileno, isatty, encoding, ...
        return getattr(self._stream, name)

    def _lose(self) -> None:
        if self.lost:
            return
        self.lost = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())  # what is still buffered goes nowhere
        finally:
            os.close(devnull)
        # As SIGTERM would: Tune's graceful stop while Tune runs, else the driver unwinds
        # (the signal is handled in the main thread, also when this write was another's).
        self._stops.stop_for(CAUSE)


@contextmanager
def stop_when_output_closed(stops: StopSignals) -> Iterator[None]:
    """Within the block, losing stdout stops the sweep (see the module docstring)."""
    original = sys.stdout
    if original is None:  # started with descriptor 1 closed: Python prints nowhere already
        yield
        return
    guarded = _Guarded(original, stops)
    sys.stdout = guarded  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout = original
