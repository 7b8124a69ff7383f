"""What `medgrid tune` prints while a sweep runs: one line when a trial starts, one when it ends
(its result, or why it did not finish), and every 30 s one line with the sweep's state.

Knows nothing of Ray: `tune.py` forwards Tune's events here, so the wording is tested without a
cluster. Ray's own tables are shown instead with `--verbose`.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TextIO

STATUS_EVERY_S = 30.0


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _acc(metrics: Mapping[str, object], key: str) -> str:
    value = metrics.get(key)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f"{key} {value:.4f}"
    return ""


@dataclass
class SweepProgress:
    """Counts trials by state and prints medgrid's progress lines."""

    total: int
    out: TextIO | None = None  # None: sys.stdout at the time of printing (stays picklable)
    every_s: float = STATUS_EVERY_S
    clock: Callable[[], float] = time.monotonic
    started_at: float = field(init=False)
    last_status: float = field(init=False)
    running: set[str] = field(default_factory=set)
    done: int = 0
    failed: int = 0
    starts: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.started_at = self.last_status = self.clock()

    def _say(self, text: str) -> None:
        print(f"[medgrid] {text}", file=self.out or sys.stdout, flush=True)

    def trial_started(self, name: str, resumed_epoch: int = 0) -> None:
        """A trial got its resources and began (or continued from a checkpoint)."""
        self.running.add(name)
        self.starts[name] = self.clock()
        note = f" (continuing after epoch {resumed_epoch})" if resumed_epoch else ""
        self._say(f"start  {name}{note}")

    def trial_ended(self, name: str, metrics: Mapping[str, object]) -> None:
        """A trial finished, diverged or was stopped early by the scheduler."""
        self.running.discard(name)
        self.done += 1
        epoch = metrics.get("epoch", "?")
        took = _duration(self.clock() - self.starts.get(name, self.clock()))
        if metrics.get("diverged"):
            outcome = f"DIVERGED at epoch {epoch}"
        else:
            accs = "  ".join(a for a in (_acc(metrics, "val/acc"), _acc(metrics, "test/acc")) if a)
            stopped = f", stopped early at epoch {epoch}" if metrics.get("stopped_early") else ""
            epochs = f"{epoch} epoch" if epoch == 1 else f"{epoch} epochs"
            outcome = f"{accs}  ({epochs}{stopped}, {took})"
        self._say(f"done   {name}: {outcome}")

    def trial_failed(self, name: str, attempt: int, error: str, will_retry: bool) -> None:
        """A trial raised; Ray may try it again."""
        self.running.discard(name)
        retry = "; Ray will retry it" if will_retry else ""
        if not will_retry:
            self.failed += 1
        self._say(f"FAILED {name} (attempt {attempt}): {error}{retry}")

    def tick(self, pending: int) -> None:
        """Every `every_s` seconds: one line with the sweep's state and the time left."""
        now = self.clock()
        if now - self.last_status < self.every_s:
            return
        self.last_status = now
        self._say(self.status_line(pending, now))

    def status_line(self, pending: int, now: float | None = None) -> str:
        """done / running / pending / failed, time so far, and an estimate of the time left."""
        now = self.clock() if now is None else now
        elapsed = now - self.started_at
        left = self.total - self.done - self.failed
        estimate = ""
        if self.done and left > 0:
            estimate = f", about {_duration(elapsed / self.done * left)} left"
        return (f"{self.done}/{self.total} done, {len(self.running)} running, {pending} pending, "
                f"{self.failed} failed; {_duration(elapsed)} elapsed{estimate}")
