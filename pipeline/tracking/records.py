"""What the tracking package hands out: plain records of runs and experiments, never MLflow's
own objects, so that the sweep, the trials and the report read runs without knowing MLflow's
entity classes (whose shapes change between MLflow versions)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.tracking.names import PARENT_TAG


class TrackingError(Exception):
    """The tracking store or server refused a request; the message is its first line."""


@dataclass(frozen=True)
class RunRecord:
    """One run: who it is, how it ended, and its params, tags and latest metric values."""

    run_id: str
    name: str
    experiment_id: str
    status: str  # RUNNING, FINISHED, FAILED, KILLED, SCHEDULED
    start_time: int | None  # ms since the epoch
    end_time: int | None
    artifact_uri: str = ""
    active: bool = True  # False once deleted
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def parent_id(self) -> str | None:
        """The sweep's parent run of a trial run (None for a parent)."""
        return self.tags.get(PARENT_TAG)


@dataclass(frozen=True)
class ExperimentRecord:
    """One experiment."""

    experiment_id: str
    name: str
    active: bool = True
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricPoint:
    """One logged value of a metric."""

    step: int
    value: float
