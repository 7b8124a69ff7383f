"""A worker's figures, drawn after its trials report: each finished trial's learning curves and
confusion matrix are rendered and uploaded to its (already FINISHED) run in one background
thread, while the worker's next trial trains. The figures are derived from what the run holds
already (its history and test confusion counts), so a trial's result, status and data files
never wait for matplotlib; `drain` waits for the figures still in progress when the worker stops.
"""

from __future__ import annotations

import sys
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from pipeline.artifacts import write_trial_figures
from pipeline.tracking.names import FIGURES_ERROR_TAG
from pipeline.tracking.runs import TrialRun
from pipeline.trial import TrialResult


class FigureQueue:
    """One background thread per worker; figures are made one trial after another."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medgrid-figures")
        self._pending: list[Future[None]] = []

    def submit(self, result: TrialResult, title: str, run: TrialRun) -> None:
        """Render and upload `result`'s figures to `run`, in the background."""
        self._pending = [f for f in self._pending if not f.done()]
        self._pending.append(self._pool.submit(render_and_upload, result, title, run))

    def drain(self) -> None:
        """Wait until every submitted trial's figures are uploaded (or failed and tagged)."""
        for future in self._pending:
            future.result()
        self._pending.clear()


def render_and_upload(result: TrialResult, title: str, run: TrialRun) -> None:
    """A trial's figures into its run. A failure costs the figures only: the run keeps its
    metrics and data files and gets the reason as a tag (and in the worker's log)."""
    try:
        with tempfile.TemporaryDirectory(prefix="medgrid-figures-") as tmp:
            write_trial_figures(result, title, Path(tmp))
            run.log_artifacts(Path(tmp))
    except Exception as error:  # noqa: BLE001 - reported on the run, the worker carries on
        line = f"{type(error).__name__}: {error}".splitlines()[0][:500]
        print(f"[medgrid] figures of {title} not made: {line}", file=sys.stderr, flush=True)
        try:
            run.set_tags({FIGURES_ERROR_TAG: line})
        except Exception:  # noqa: BLE001 - the tracking server itself is gone
            pass
