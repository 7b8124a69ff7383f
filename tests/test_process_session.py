"""Finding a process tree and awaiting its exit (pipeline/process_session.py), on real
processes: what a sweep relies on to return with none of its local Ray's processes alive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from pipeline.process_session import Process, alive, await_exit, process_tree

# A parent that starts a child and prints the child's pid; both then run until `linger` ends,
# the child ignoring SIGTERM (as a worker busy exiting does not stop for it).
TREE = """
import os, signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(%s)"])
print(child.pid, flush=True)
time.sleep(%s)
"""


@pytest.fixture
def tree() -> Iterator[tuple[subprocess.Popen, int]]:
    """A parent (60 s) and its child (60 s), both killed at the end whatever happened."""
    parent = subprocess.Popen([sys.executable, "-c", TREE % (60, 60)], stdout=subprocess.PIPE,
                              text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    both = process_tree([parent.pid])
    yield parent, child
    for process in alive(both):
        os.kill(process.pid, signal.SIGKILL)
    parent.wait()


def test_the_tree_holds_the_root_and_its_descendants(tree) -> None:
    parent, child = tree
    assert {process.pid for process in process_tree([parent.pid])} == {parent.pid, child}
    assert {process.pid for process in process_tree([child])} == {child}
    assert process_tree([]) == []


def test_a_process_that_exits_within_the_grace_is_awaited_not_killed() -> None:
    quick = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)"])
    assert await_exit(process_tree([quick.pid]), grace_s=30) == []
    assert quick.poll() == 0  # already over when await_exit returned, and by itself: not killed


def test_processes_still_running_after_the_grace_are_killed(tree) -> None:
    parent, child = tree
    processes = process_tree([parent.pid])
    assert await_exit(processes, grace_s=0.5) == []
    assert alive(processes) == []
    assert parent.wait() == -signal.SIGKILL


def test_a_reused_pid_is_not_taken_for_the_process_that_had_it(tree) -> None:
    """A process is known by pid and start time: another process under the same pid (here, a
    made-up start time for a live pid) is not the one awaited."""
    parent, _ = tree
    [real] = [p for p in process_tree([parent.pid]) if p.pid == parent.pid]
    assert alive([real]) == [real]
    assert alive([Process(parent.pid, real.started + 1)]) == []
