"""How the driver answers SIGINT/SIGTERM (`StopSignals`, called here as Python calls a signal
handler): the first stops the sweep through Tune, the second forces the exit unless the sweep
is already closing its runs, the third ends the process. The real signals, sent to real sweeps,
are in test_interrupts.py."""

from __future__ import annotations

import signal

import pytest

from pipeline.interrupts import StopSignals, SweepInterrupted

pytestmark = pytest.mark.fast


class Exited(Exception):
    """Stands in for `os._exit`, which would end pytest."""


@pytest.fixture
def stops(monkeypatch: pytest.MonkeyPatch) -> StopSignals:
    def exit_now(code: int) -> None:
        raise Exited(code)

    monkeypatch.setattr("pipeline.interrupts.os._exit", exit_now)
    return StopSignals()


def test_the_first_signal_while_tune_runs_asks_tune_to_stop(stops: StopSignals) -> None:
    asked: list[bool] = []
    stops.graceful = lambda: asked.append(True) or True
    stops(signal.SIGTERM, None)  # no exception: Tune stops the trials, the driver then exits
    assert asked == [True] and stops.received and stops.signum == signal.SIGTERM


def test_the_first_signal_outside_tune_unwinds_the_driver(stops: StopSignals) -> None:
    with pytest.raises(SweepInterrupted) as raised:
        stops(signal.SIGINT, None)
    assert raised.value.exit_code == 130


def test_a_second_signal_forces_the_exit_while_tune_stops(stops: StopSignals) -> None:
    stops.graceful = lambda: True
    stops(signal.SIGINT, None)
    with pytest.raises(SweepInterrupted) as raised:
        stops(signal.SIGINT, None)
    assert raised.value.exit_code == 130


@pytest.mark.parametrize("first, exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_while_the_runs_are_closed_a_second_signal_waits_and_a_third_exits(
        stops: StopSignals, first: signal.Signals, exit_code: int) -> None:
    stops.graceful = lambda: True
    stops(first, None)
    stops.closing = True
    stops(signal.SIGINT, None)  # no exception: the runs are being closed, let that finish
    assert stops.count == 2
    with pytest.raises(Exited) as exited:
        stops(signal.SIGINT, None)
    assert exited.value.args == (128 + signal.SIGINT,)
    assert SweepInterrupted(stops.signum or 0).exit_code == exit_code  # the first one's code
