"""SIGINT and SIGTERM while a sweep runs: the first asks the sweep to stop cleanly, the second
forces the exit (Tune's stop is not waited for; the runs are still closed), a third ends the
process at once.

Stopping cleanly means letting Tune save its experiment state and stop the trials, then closing
the MLflow runs that did not finish as KILLED and shutting down Ray and the private tracking
server, so that `--resume` can continue. While Tune runs, "stop" is Tune's own graceful stop
(`graceful`); outside it there is nothing to wait for, and the signal unwinds the driver at once
as `SweepInterrupted`, through the same cleanup.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

HANDLED = (signal.SIGINT, signal.SIGTERM)


class SweepInterrupted(KeyboardInterrupt):
    """The sweep was stopped by a signal; the process should exit 128 + `signum`."""

    def __init__(self, signum: int, detail: str = "", cause: str = "", advice: str = "") -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.detail = detail  # e.g. how many trials finished, set once the runs are closed
        self.cause = cause  # why medgrid stopped the sweep itself ("" when a user's signal did)
        self.advice = advice  # what to do before resuming, e.g. "free some space"

    @property
    def exit_code(self) -> int:
        """The shell's convention for a user's signal: 130 for SIGINT, 143 for SIGTERM; 1 when
        medgrid stopped the sweep itself (a failure, not the user's request)."""
        return 1 if self.cause else 128 + self.signum


class StopSignals:
    """Counts SIGINT/SIGTERM; `graceful` (set while Tune runs) is how the first one stops."""

    def __init__(self) -> None:
        self.signum: int | None = None  # the first signal received
        self.count = 0
        self.graceful: Callable[[], bool] | None = None  # True if it took the stop request
        self.cause = ""  # set by `stop_for` when medgrid itself stops the sweep
        self.advice = ""  # and what the user should do before resuming
        # Set once the sweep is closing its runs and shutting down: a second signal then has
        # nothing left to skip, and raising it would cut that short (runs left RUNNING).
        self.closing = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.signum is None:
            self.signum = signum
        if self.count >= 3:  # the cleanup itself hangs: the user has asked three times
            os._exit(128 + signum)
        if self.closing:
            return
        if self.count == 1 and self.graceful is not None and self.graceful():
            return
        raise SweepInterrupted(self.signum, cause=self.cause, advice=self.advice)

    @property
    def received(self) -> bool:
        """Whether the sweep was asked to stop."""
        return self.signum is not None

    def install(self) -> None:
        """Handle SIGINT and SIGTERM here (again: `ray.init` puts its own SIGTERM handler in the
        driver, which aborts the process with a core-dump banner)."""
        for signum in HANDLED:
            signal.signal(signum, self)

    def raise_if_received(self, detail: str = "") -> None:
        """Turn a stop request that Tune honoured into the driver's exit."""
        if self.signum is not None:
            raise SweepInterrupted(self.signum, detail, self.cause, self.advice)

    def stop_for(self, cause: str, advice: str = "") -> None:
        """Stop the sweep as SIGTERM would, for `cause` (callable from any thread: the stop
        itself runs in the main thread, where Python delivers signals); `advice`: what the
        user should do before resuming."""
        if not self.cause and self.signum is None:
            self.cause, self.advice = cause, advice
            os.kill(os.getpid(), signal.SIGTERM)


@contextmanager
def stop_signals() -> Iterator[StopSignals]:
    """Handle SIGINT and SIGTERM in this block (main thread only), then restore the handlers."""
    stops = StopSignals()
    previous = {signum: signal.getsignal(signum) for signum in HANDLED}
    stops.install()
    try:
        yield stops
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
