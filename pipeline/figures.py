"""A worker's figures, drawn after its trials report: each finished trial's learning curves and
confusion matrix are rendered and uploaded to its (already FINISHED) run in one background
thread, while the worker's next trial trains. The figures are derived from what the run holds
already (its history and test confusion counts), so a trial's result, status and data files
never wait for matplotlib; `drain` waits for the figures still in progress when the worker stops.

The run carries `medgrid.figures = pending` from its end until its figures are uploaded
("drawn"). A worker that ends in between (a node lost, a process killed) leaves it pending; the
driver then draws those figures itself from the run's history.csv and confusion_matrix.csv once
the trials are done (`redraw_pending`), so a finished run never lacks its figures silently.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.artifacts import draw_figures, write_trial_figures
from pipeline.tracking.client import TrackingClient
from pipeline.tracking.names import (
    FIGURES_DRAWN,
    FIGURES_ERROR_TAG,
    FIGURES_FAILED,
    FIGURES_PENDING,
    FIGURES_TAG,
    FINISHED,
    PARENT_TAG,
)
from pipeline.tracking.records import RunRecord
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
        run.set_tags({FIGURES_TAG: FIGURES_DRAWN})
    except Exception as error:  # noqa: BLE001 - reported on the run, the worker carries on
        _failed(title, error, lambda tags: run.set_tags(tags))


def redraw_pending(client: TrackingClient, experiment_id: str, parent_run_id: str) -> int:
    """Draw, here, the figures of the sweep's finished trials still marked pending (their
    worker ended before drawing them); how many runs that was."""
    query = (f"tags.`{PARENT_TAG}` = '{parent_run_id}' "
             f"and tags.`{FIGURES_TAG}` = '{FIGURES_PENDING}'")
    pending = [run for run in client.find_runs([experiment_id], query)
               if run.status == FINISHED]
    for run in pending:
        try:
            _redraw(client, run)
        except Exception as error:  # noqa: BLE001 - the figures only: the sweep goes on
            _failed(run.name, error, lambda tags, r=run: client.tag_run(r.run_id, tags))
    return len(pending)


def _redraw(client: TrackingClient, run: RunRecord) -> None:
    """A run's figures from its data files, as its worker would have drawn them."""
    with tempfile.TemporaryDirectory(prefix="medgrid-figures-") as tmp:
        source, out = Path(tmp) / "source", Path(tmp) / "figures"
        source.mkdir()
        history = pd.read_csv(client.fetch_artifact(run.run_id, "history.csv", source))
        confusion = None
        if "confusion_matrix.csv" in client.artifact_names(run.run_id):  # absent: diverged
            path = client.fetch_artifact(run.run_id, "confusion_matrix.csv", source)
            confusion = pd.read_csv(path, index_col=0).to_numpy(dtype=np.int64)
        draw_figures(history.to_dict("records"), confusion, run.name, out)
        client.upload_artifacts(run.run_id, out)
    client.tag_run(run.run_id, {FIGURES_TAG: FIGURES_DRAWN})


def _failed(title: str, error: Exception, set_tags: Callable[[dict[str, str]], None]) -> None:
    """A trial whose figures could not be made: said on stderr and on its run."""
    line = f"{type(error).__name__}: {error}".splitlines()[0][:500]
    print(f"[medgrid] figures of {title} not made: {line}", file=sys.stderr, flush=True)
    try:
        set_tags({FIGURES_ERROR_TAG: line, FIGURES_TAG: FIGURES_FAILED})
    except Exception:  # noqa: BLE001 - the tracking server itself is gone
        pass
