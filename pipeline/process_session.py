"""Find and kill every process of one POSIX session (Linux /proc).

A sweep's driver started with `start_new_session=True` leads a session that its local Ray
(gcs_server, raylets, workers) and private MLflow server join, so killing that session stops
exactly that sweep. `ray stop --force` would instead stop every Ray of the user, including the
caller's own (a pytest process that ran an in-process sweep dies with its raylet).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def session_pids(session: int) -> list[int]:
    """Live (not zombie) processes whose session id is `session`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # Fields after the command name: state, ppid, pgrp, session, ...
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            found.append(int(entry.name))
    return found


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
