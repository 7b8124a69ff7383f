"""Find, await and kill processes by session or by parentage (Linux /proc).

A sweep's driver started with `start_new_session=True` leads a session that its local Ray
(gcs_server, raylets, workers) and private MLflow server join, so killing that session stops
exactly that sweep. `ray stop --force` would instead stop every Ray of the user, including the
caller's own (a pytest process that ran an in-process sweep dies with its raylet).

A local Ray's processes are the tree under its head processes (the raylet starts the workers):
`ray.shutdown` ends them but does not wait for the workers, which exit on their own moments
later, so the sweep awaits that tree before it returns.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Process:
    """One process, told apart from a later one that reuses its pid by its start time."""

    pid: int
    started: int  # clock ticks after boot (/proc/PID/stat field 22)


def _live_stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, pgrp, session, ...,
    field 22 (index 19) the start time); None when the process has exited (a zombie has too,
    it is only not yet reaped)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else fields


def _live_processes() -> dict[int, list[str]]:
    """Every live process's stat fields, by pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _live_stat(entry.name)) is not None:
            found[int(entry.name)] = fields
    return found


def process_tree(roots: Iterable[int]) -> list[Process]:
    """The live processes among `roots` and all their descendants, as they are now."""
    children: dict[int, list[int]] = {}
    started: dict[int, int] = {}
    for pid, fields in _live_processes().items():
        children.setdefault(int(fields[1]), []).append(pid)
        started[pid] = int(fields[19])
    found: list[Process] = []
    waiting = [pid for pid in roots if pid in started]
    while waiting:
        pid = waiting.pop()
        found.append(Process(pid, started[pid]))
        waiting.extend(children.get(pid, []))
    return found


def alive(processes: Iterable[Process]) -> list[Process]:
    """Those of `processes` still running (not exited, and their pid not taken by another)."""
    return [process for process in processes
            if (fields := _live_stat(process.pid)) is not None
            and int(fields[19]) == process.started]


def await_exit(processes: Iterable[Process], grace_s: float) -> list[Process]:
    """Wait up to `grace_s` for `processes` to exit, then SIGKILL those still running; those
    that outlived even that (empty when all are gone)."""
    processes = list(processes)
    deadline = time.monotonic() + grace_s
    while (left := alive(processes)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for process in left:
        try:
            os.kill(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while (left := alive(left)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def session_pids(session: int) -> list[int]:
    """Live (not zombie) processes whose session id is `session`."""
    return [pid for pid, fields in _live_processes().items() if int(fields[3]) == session]


def kill_session(session: int, grace_s: float = 30.0) -> list[int]:
    """SIGKILL every process of `session` until none is left; the pids that would not die
    within `grace_s` (empty when all are gone)."""
    deadline = time.monotonic() + grace_s
    while (pids := session_pids(session)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    return session_pids(session)
