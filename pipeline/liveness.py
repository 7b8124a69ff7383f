"""Is a sweep's driver still alive? What lets two sweeps of one space share a store.

A sweep leaves runs RUNNING when its driver is killed; the next sweep of the same space closes
them as KILLED. It must not close the runs of a sweep that is still running (a second terminal, a
second job of a scheduler). So each sweep's parent run names its driver (host, pid and the pid's
start time, which tells a live driver from a later process that reuses its pid) and carries a
heartbeat, a timestamp its driver refreshes while it runs. On the driver's own host, /proc
answers at once; from another host, a heartbeat older than `STALE_AFTER_S` means dead.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.periodic import Periodic

HEARTBEAT_EVERY_S = 15.0
STALE_AFTER_S = 90.0  # six missed heartbeats


def process_start(pid: int) -> str | None:
    """The start time of `pid` in clock ticks since boot (field 22 of /proc/<pid>/stat); None
    when no such process exists, or it is a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]


def this_driver() -> str:
    """The driver tag's value for this process."""
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                       "started": process_start(os.getpid())})


def describe(driver: str | None) -> str:
    """'pid N on host H', for messages."""
    try:
        who = json.loads(driver or "")
        return f"pid {who['pid']} on {who['host']}"
    except (ValueError, TypeError, KeyError):
        return "a driver of unknown whereabouts"


def sweep_alive(driver: str | None, heartbeat: str | None, now: float | None = None) -> bool:
    """Whether the sweep whose parent carries these tags still has a live driver. A parent
    without a driver tag (an older medgrid's) counts as dead, as it always did."""
    try:
        who = json.loads(driver or "")
        host, pid, started = who["host"], int(who["pid"]), who["started"]
    except (ValueError, TypeError, KeyError):
        return False
    if host == socket.gethostname() and Path("/proc/self/stat").exists():
        return started is not None and process_start(pid) == started
    try:
        beat = float(heartbeat or "")
    except ValueError:
        return False
    return (time.time() if now is None else now) - beat < STALE_AFTER_S


class Heartbeat(Periodic):
    """Calls `beat()` every `every_s` seconds in a daemon thread while the context is open.
    A failing beat (the store briefly unreachable) is skipped, never raised into the sweep."""

    def __init__(self, beat: Callable[[], None], every_s: float = HEARTBEAT_EVERY_S) -> None:
        def task() -> bool:
            try:
                beat()
            except Exception:  # noqa: BLE001 - a missed beat only ages the timestamp
                pass
            return False  # beat until the sweep ends

        super().__init__(task, every_s, "medgrid-heartbeat")
