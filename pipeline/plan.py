"""What a sweep runs, without Ray: the plan (preset grid points or a sampled study), each
trial's resources, and how a trial ended. The driver plans and checks a sweep with this module
alone, so a bad space is refused, and the tracking server started, before Ray is imported."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.config import (
    AshaSpec,
    SearchSpec,
    StudySpec,
    TrialConfig,
    config_from_values,
    trial_name,
)
from pipeline.models import get_spec

NAME_KEY = "name"  # a grid trial's run name, beside its config in Tune's config
ALSO_KEY = "also"  # JSON {study: run name} of identical grid trials this one trains for


@dataclass(frozen=True)
class Resources:
    """Resources of one trial: the model spec's own bundle if it has one (the numpy models:
    one CPU), else these (so GPUs go to the models that can use them)."""

    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0

    def for_model(self, model: str) -> dict[str, float]:
        """Ray's resource bundle for a trial of `model` (Ray's keys: CPU, GPU)."""
        fixed = get_spec(model).resources
        if fixed is not None:
            return dict(fixed)
        bundle = {"CPU": self.cpus_per_trial}
        if self.gpus_per_trial > 0:
            bundle["GPU"] = self.gpus_per_trial
        return bundle


@dataclass(frozen=True)
class SweepPlan:
    """What Tune runs: preset grid points, or one sampled study with its search block."""

    search: SearchSpec
    scheduler: AshaSpec | None
    checkpoint_every: int
    points: tuple[dict[str, Any], ...] = ()  # grid: one full config (+ name) per trial
    study: StudySpec | None = None  # sampled: the study whose distributions Tune draws from

    @property
    def n_trials(self) -> int:
        """Trials the sweep will run (grid points, or samples)."""
        return len(self.points) if self.study is None else int(self.search.num_samples or 0)

    def trial_config(self, config: Mapping[str, Any]) -> TrialConfig:
        """The validated `TrialConfig` of Tune's config of a trial."""
        values = {k: v for k, v in config.items() if k in TrialConfig.model_fields}
        if self.study is None:
            return TrialConfig.model_validate(values)
        return config_from_values(self.study, values)

    def trial_name(self, config: Mapping[str, Any]) -> str:
        """The readable name: the planned one for a grid trial; for a sampled one its values
        rounded (`RunNames` makes it unique)."""
        if self.study is None:
            return str(config[NAME_KEY])
        return trial_name(self.study, self.trial_config(config))

    def also(self, config: Mapping[str, Any]) -> dict[str, str]:
        """The other studies (study -> run name) that use this grid trial's training."""
        if self.study is None and config.get(ALSO_KEY):
            return dict(json.loads(str(config[ALSO_KEY])))
        return {}

    def models(self) -> set[str]:
        """The models the sweep trains."""
        if self.study is not None:
            return {self.study.model}
        return {str(point["model"]) for point in self.points}


UNFINISHED = "UNFINISHED"  # a trial Tune never ran (the sweep was stopped first)


@dataclass
class TrialOutcome:
    """How one trial ended, as Tune saw it."""

    name: str
    status: str  # TERMINATED, ERROR, or UNFINISHED
    metrics: dict[str, Any]
    error: str | None = None
    stopped_early: bool = False
