"""medgrid's own progress lines: what a user reads in the terminal while a sweep runs."""

from __future__ import annotations

import io

import pytest

from pipeline.progress import SweepProgress

pytestmark = pytest.mark.fast  # no Ray, no MLflow: `make test-fast`


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def progress(total: int = 4) -> tuple[SweepProgress, io.StringIO, FakeClock]:
    out, clock = io.StringIO(), FakeClock()
    return SweepProgress(total, out=out, clock=clock), out, clock


def test_one_line_per_trial_start_and_end_with_its_result() -> None:
    p, out, clock = progress()
    p.trial_started("q2_lr lr=0.1 seed=42")
    clock.now += 75
    p.trial_ended("q2_lr lr=0.1 seed=42", {"val/acc": 0.81234, "test/acc": 0.7, "epoch": 20})
    assert out.getvalue().splitlines() == [
        "[medgrid] start  q2_lr lr=0.1 seed=42",
        "[medgrid] done   q2_lr lr=0.1 seed=42: val/acc 0.8123  test/acc 0.7000  "
        "(20 epochs, 1m15s)",
    ]


def test_diverged_stopped_failed_and_resumed_trials_say_so() -> None:
    p, out, _ = progress()
    p.trial_started("a", resumed_epoch=7)
    p.trial_ended("a", {"val/acc": float("nan"), "epoch": 3, "diverged": True})
    p.trial_ended("b", {"val/acc": 0.5, "epoch": 4, "stopped_early": True})
    p.trial_failed("c", 1, "RuntimeError: boom", will_retry=True)
    p.trial_failed("c", 2, "RuntimeError: boom", will_retry=False)
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("a (continuing after epoch 7)")
    assert lines[1] == "[medgrid] done   a: DIVERGED at epoch 3"
    assert "stopped early at epoch 4" in lines[2] and "nan" not in out.getvalue()
    assert lines[3].endswith("(attempt 1): RuntimeError: boom; Ray will retry it")
    assert not lines[4].endswith("retry it") and p.failed == 1


def test_status_line_every_30_seconds_with_an_estimate_of_the_time_left() -> None:
    p, out, clock = progress(total=4)
    p.trial_started("a")
    p.trial_started("b")
    clock.now += 10
    p.tick(pending=2)
    assert out.getvalue().count("\n") == 2  # not yet: 30 s have not passed
    p.trial_ended("a", {"val/acc": 0.5, "epoch": 1})
    clock.now += 50  # 60 s in, 1 of 4 done: about 3 x 60 s left
    p.tick(pending=2)
    assert out.getvalue().splitlines()[-1] == (
        "[medgrid] 1/4 done, 1 running, 2 pending, 0 failed; 1m00s elapsed, about 3m00s left")
    assert "left" not in SweepProgress(3, out=io.StringIO()).status_line(3)  # nothing done yet
