"""Typed configs: one trial's config, the search-space YAML that describes a study, and the
expansion of a sweep into the list of trials it runs.

A study file reads as a small table of choices: scalars under `params` are fixed, lists are a grid
over their values, `variants` are alternatives tried one at a time (e.g. "none / L2 / dropout"),
and `seeds` repeats the whole grid per seed. A sweep file lists study files under `include`.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.errors import UserError

ModelName = Literal["numpy_perceptron", "numpy_logreg", "numpy_mlp", "torch_logreg", "torch_ffn"]

# Short names for the run name, e.g. "q2_lr lr=0.1 seed=42".
_SHORT = {"learning_rate": "lr", "batch_size": "batch", "l2_decay": "l2", "hidden_size": "hidden"}


class TrialConfig(BaseModel):
    """Everything one trial depends on; its field names are the YAML keys and MLflow params."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    study: str = Field(min_length=1)
    model: ModelName
    seed: int = 42
    epochs: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    batch_size: int = Field(default=16, ge=1)
    hidden_size: int = Field(default=200, ge=1)
    layers: int = Field(default=1, ge=1)
    activation: Literal["relu", "tanh"] = "relu"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    l2_decay: float = Field(default=0.0, ge=0.0)
    optimizer: Literal["sgd", "adam"] = "sgd"


    @model_validator(mode="after")
    def _options_fit_the_model(self) -> TrialConfig:
        # The from-scratch numpy models are the homework's: one ReLU hidden layer at most,
        # plain per-sample SGD, no dropout or L2; logistic regression has no hidden layer.
        # Say so when the space is loaded, not mid-sweep.
        fixed: dict[str, object] = {}
        if self.model.startswith("numpy_"):
            fixed = {"layers": 1, "activation": "relu", "dropout": 0.0, "l2_decay": 0.0,
                     "optimizer": "sgd"}
        elif self.model == "torch_logreg":
            fixed = {"layers": 1, "hidden_size": 200, "activation": "relu", "dropout": 0.0}
        for key, expected in fixed.items():
            if getattr(self, key) != expected:
                raise ValueError(f"{key} = {getattr(self, key)!r} is not supported by "
                                 f"{self.model}; expected {expected!r}")
        return self


TRIAL_KEYS = frozenset(TrialConfig.model_fields) - {"study", "model", "seed"}


class StudySpec(BaseModel):
    """One study file: a model, fixed and gridded params, optional variants, seeds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    source: str = ""
    model: ModelName
    seeds: list[int] = Field(default=[42], min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    variants: list[dict[str, Any]] = Field(default=[{}], min_length=1)


@dataclass(frozen=True)
class PlannedTrial:
    """A trial config and its readable run name."""

    config: TrialConfig
    name: str


@dataclass(frozen=True)
class Sweep:
    """A loaded search space: its studies, the file it came from and a hash of its content."""

    name: str
    path: Path
    content_sha256: str
    studies: tuple[StudySpec, ...]


def load_space(path: str | Path) -> Sweep:
    """Load and validate a study or sweep YAML; every problem is a one-line `UserError`."""
    path = Path(path)
    raw = _read_yaml(path)
    digest = hashlib.sha256(path.read_bytes())
    if "include" in raw:
        extra = set(raw) - {"name", "description", "include"}
        if extra:
            raise UserError(f"{path}: unknown key '{sorted(extra)[0]}'; "
                            "a sweep file has only name, description and include")
        includes = raw["include"]
        if not isinstance(includes, list) or not includes:
            raise UserError(f"{path}: include = {includes!r}; expected a non-empty list of files")
        studies = []
        for item in includes:
            child = path.parent / str(item)
            studies.append(_load_study(child, _read_yaml(child)))
            digest.update(child.read_bytes())
        name = str(raw.get("name") or path.stem)
    else:
        studies = [_load_study(path, raw)]
        name = studies[0].name
    _check_unique(path, [s.name for s in studies])
    return Sweep(name, path, digest.hexdigest(), tuple(studies))


def expand(sweep: Sweep) -> list[PlannedTrial]:
    """Every trial of the sweep, in file order: grid x variants x seeds per study."""
    return [trial for study in sweep.studies for trial in expand_study(study)]


def expand_study(study: StudySpec) -> list[PlannedTrial]:
    """The trials of one study (configs were validated when the file was loaded)."""
    grid_keys = [k for k, v in study.params.items() if isinstance(v, list)]
    grid_values = [study.params[k] for k in grid_keys]
    trials = []
    for seed in study.seeds:
        for combo in itertools.product(*grid_values):
            for variant in study.variants:
                values = {**study.params, **dict(zip(grid_keys, combo, strict=True)), **variant}
                config = TrialConfig(study=study.name, model=study.model, seed=seed, **values)
                # Values as validated (YAML 1.1 reads "1.0e6" as text; pydantic made it 1e6).
                label = [_fmt(k, getattr(config, k)) for k in [*grid_keys, *variant]]
                if not variant and len(study.variants) > 1:
                    label.append("baseline")  # the variant that changes nothing
                trials.append(PlannedTrial(config, " ".join([study.name, *label, f"seed={seed}"])))
    return trials


def _fmt(key: str, value: Any) -> str:
    return f"{_SHORT.get(key, key)}={value}"


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        reason = exc.strerror or exc
        raise UserError(f"{path}: cannot read ({reason}); expected a YAML file") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}: not valid YAML{where}; expected a mapping of keys") from exc
    if not isinstance(raw, dict):
        raise UserError(f"{path}: top level is {type(raw).__name__}; expected a mapping of keys")
    return raw


def _load_study(path: Path, raw: dict[str, Any]) -> StudySpec:
    try:
        study = StudySpec.model_validate(raw)
    except ValidationError as exc:
        raise UserError(f"{path}: {_describe(exc)}") from exc
    for key in [*study.params, *(k for v in study.variants for k in v)]:
        if key not in TRIAL_KEYS:
            raise UserError(f"{path}: unknown key '{key}'; expected one of {sorted(TRIAL_KEYS)}")
    for key, value in study.params.items():
        if isinstance(value, list) and not value:
            raise UserError(f"{path}: params.{key} = []; expected a value or a non-empty list")
    # Validate every trial now, so that a bad value fails before anything launches.
    for seed in study.seeds:
        for variant in study.variants:
            for key, value in {**study.params, **variant}.items():
                for item in value if isinstance(value, list) else [value]:
                    _check_value(path, study, seed, key, item)
    return study


def _check_value(path: Path, study: StudySpec, seed: int, key: str, value: Any) -> None:
    base = {k: (v[0] if isinstance(v, list) else v) for k, v in study.params.items()}
    try:
        TrialConfig(study=study.name, model=study.model, seed=seed, **{**base, key: value})
    except ValidationError as exc:
        raise UserError(f"{path}: {_describe(exc, prefix=key)}") from exc


def _check_unique(path: Path, names: list[str]) -> None:
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise UserError(f"{path}: study name '{sorted(duplicates)[0]}' appears twice; "
                        "expected unique study names")


def _describe(exc: ValidationError, prefix: str | None = None) -> str:
    """One line from pydantic's first error: key, offending value, what is expected."""
    err = exc.errors()[0]
    if err["type"] == "value_error" and not err["loc"]:  # a whole-config rule: says it all
        return str(err["ctx"]["error"])
    key = ".".join(str(p) for p in err["loc"]) or (prefix or "?")
    value = err.get("input")
    if err["type"] == "missing":
        return f"missing key '{key}'"
    if err["type"] == "extra_forbidden":
        return f"unknown key '{key}'"
    return f"{key} = {value!r}: {err['msg'].lower()}"
