"""The client every part of medgrid talks to MLflow through: MLflow's `MlflowClient`, plus
methods that return `records` (plain dataclasses) and raise `TrackingError`, so that nothing
outside `pipeline.tracking` imports MLflow or reads its entity objects.

It is an `MlflowClient` (not a wrapper around one) so that the writing side in `runs.py` keeps
calling MLflow's API directly; code outside this package uses only the methods defined here.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.errors import UserError
from pipeline.tracking.names import RUNNING
from pipeline.tracking.records import ExperimentRecord, MetricPoint, RunRecord, TrackingError
from pipeline.tracking.server import is_remote, require_server
from pipeline.tracking.store import SQLITE_PREFIX, upgrade_proxied_artifacts

_PAGE = 1000


def first_line(exc: BaseException) -> str:
    """An exception's message in one line (its type's name if it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def _refusals() -> Iterator[None]:
    """MLflow's refusals as `TrackingError`, so callers need not know MLflow's exceptions."""
    try:
        yield
    except MlflowException as exc:
        raise TrackingError(first_line(exc)) from exc


def run_record(run: Any) -> RunRecord:
    """The record of an MLflow `Run`."""
    info, data = run.info, run.data
    return RunRecord(
        run_id=str(info.run_id), name=str(info.run_name or ""),
        experiment_id=str(info.experiment_id), status=str(info.status),
        start_time=info.start_time, end_time=info.end_time,
        artifact_uri=str(info.artifact_uri or ""), active=info.lifecycle_stage == "active",
        params=dict(data.params), tags=dict(data.tags),
        metrics={k: float(v) for k, v in data.metrics.items()})


def _experiment_record(experiment: Any) -> ExperimentRecord:
    return ExperimentRecord(str(experiment.experiment_id), str(experiment.name),
                            experiment.lifecycle_stage == "active", dict(experiment.tags))


class TrackingClient(MlflowClient):
    """`MlflowClient` for one tracking URI, with typed reads and writes for medgrid's modules."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)

    def run(self, run_id: str) -> RunRecord:
        """The run `run_id`; `TrackingError` if there is none."""
        with _refusals():
            return run_record(self.get_run(run_id))

    def find_runs(self, experiment_ids: Sequence[str], query: str, limit: int | None = None,
                  newest_first: bool = False) -> list[RunRecord]:
        """Active runs matching `query` (MLflow's filter syntax), all pages unless `limit`."""
        order = ["attributes.start_time DESC"] if newest_first else None
        runs: list[RunRecord] = []
        token = None
        with _refusals():
            while True:
                page = self.search_runs(list(experiment_ids), query,
                                        max_results=min(limit or _PAGE, _PAGE),
                                        order_by=order, page_token=token)
                runs.extend(run_record(r) for r in page)
                token = page.token
                if not token or (limit is not None and len(runs) >= limit):
                    return runs[:limit] if limit is not None else runs

    def metric_history(self, run_id: str, key: str) -> list[MetricPoint]:
        """Every logged value of `key` in run `run_id`, as (step, value)."""
        with _refusals():
            return [MetricPoint(int(p.step), float(p.value))
                    for p in self.get_metric_history(run_id, key)]

    def experiment(self, experiment_id: str) -> ExperimentRecord:
        """The experiment `experiment_id`."""
        with _refusals():
            return _experiment_record(self.get_experiment(experiment_id))

    def experiment_named(self, name: str) -> ExperimentRecord | None:
        """The experiment called `name`, if any (deleted ones included: see `active`)."""
        with _refusals():
            found = self.get_experiment_by_name(name)
        return _experiment_record(found) if found is not None else None

    def experiments(self, limit: int | None = None) -> list[ExperimentRecord]:
        """The active experiments (at most `limit`)."""
        with _refusals():
            found = self.search_experiments(max_results=limit) if limit else \
                self.search_experiments()
        return [_experiment_record(e) for e in found]

    def artifact_names(self, run_id: str) -> set[str]:
        """The file names at the root of the run's artifacts."""
        with _refusals():
            return {Path(a.path).name for a in self.list_artifacts(run_id)}

    def fetch_artifact(self, run_id: str, name: str, directory: Path) -> Path:
        """Download artifact `name` of the run into `directory`; the local path."""
        # MLflow draws a progress bar on stderr for every file it downloads.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        with _refusals():
            return Path(self.download_artifacts(run_id, name, str(directory)))

    def upload_artifacts(self, run_id: str, directory: Path, under: str | None = None) -> None:
        """Every file under `directory` as artifacts of the run (below `under`)."""
        with _refusals():
            self.log_artifacts(run_id, str(directory), under)

    def tag_run(self, run_id: str, tags: dict[str, str]) -> None:
        """Set the run's `tags`, all in one request."""
        with _refusals():
            self.log_batch(run_id, tags=[RunTag(key, value) for key, value in tags.items()])

    def end_run(self, run_id: str, status: str) -> None:
        """End the run as FINISHED, FAILED or KILLED."""
        with _refusals():
            self.set_terminated(run_id, status)

    def reopen_run(self, run_id: str) -> None:
        """Mark an ended run RUNNING again (a resumed sweep's parent)."""
        with _refusals():
            self.update_run(run_id, status=RUNNING)


def open_store(uri: str) -> TrackingClient:
    """A client for reading `uri`, after checking that the store or server is there to be read
    (a missing SQLite file is refused rather than created empty)."""
    if is_remote(uri):
        return TrackingClient(require_server(uri))
    if uri.startswith(SQLITE_PREFIX):
        # The client would create an empty store for a missing file: reading must not.
        location, question, query = uri[len(SQLITE_PREFIX):].partition("?")
        path = Path(urllib.parse.unquote(location))
        if not path.is_file():
            raise UserError(f"--tracking-uri {uri}: no such file {path}; expected the "
                            "mlflow.db of an earlier `medgrid tune` (run from the same directory)")
        # MLflow caches one store per URI string: a relative URI would keep reading the file of
        # the directory it was first opened in, so the client gets the absolute one.
        uri = f"{SQLITE_PREFIX}{path.resolve()}{question}{query}"
    # Runs of medgrid 0.1 recorded proxied artifact URIs that a local client cannot open.
    upgrade_proxied_artifacts(uri, Path("mlruns"))
    try:
        client = TrackingClient(uri)
        client.search_experiments(max_results=1)  # opens the store now, not halfway through
    except Exception as exc:  # any failure here means the URI names no readable store
        raise UserError(f"--tracking-uri {uri}: cannot open ({first_line(exc)}); expected an "
                        "MLflow store or server") from exc
    return client
