"""Typed configs: one trial's config, the search-space YAML that describes a study, and the
expansion of a sweep into the list of trials it runs.

A study file reads as a small table of choices: scalars under `params` are fixed, lists are a grid
over their values, `variants` are alternatives tried one at a time (e.g. "none / L2 / dropout"),
and `seeds` repeats the whole grid per seed. A sweep file lists study files under `include`.

Sampled search (no Ray here: this module only describes it; `pipeline.tune` builds the Ray
objects). A value under `params` may also be a one-key mapping naming a distribution:

- `{loguniform: [low, high]}`: floats, 0 < low < high, uniform in log space.
- `{uniform: [low, high]}`: floats, low < high.
- `{randint: [low, high]}`: integers, low < high; `high` is EXCLUDED, as in Ray's
  `tune.randint`: `{randint: [1, 4]}` draws 1, 2 or 3.
- `{choice: [v1, v2, ...]}`: one of the listed values (a non-empty list).

Both ends of a range (for randint low and high - 1, for choice every value) must be values the
parameter accepts, and integer fields (epochs, batch_size, hidden_size, layers) take only randint
or choice. A distribution needs a `search` block with `algorithm: random` or `optuna` and
`num_samples`; `metric` (one of `REPORTED_METRICS`, default `val/acc`) and `mode` (default `max`)
say what is best, `seed` seeds the searcher (default 0). Random search may mix lists (Ray repeats
the grid for each of the `num_samples`); optuna cannot grid, so it takes distributions only. A
sampled study runs one seed and at most one variant. An optional `scheduler: {asha: {...}}` stops
poor trials early on the search block's metric and mode, and `checkpoint_every` (epochs, 0 = off,
default 1) says how often a trial saves a checkpoint.

A sweep file includes either grid studies only, or exactly one sampled study and nothing else. It
has one search block (that of its sampled study, else the grid default, which its grid studies
must share), one scheduler or none (every included study names the same one, or none does) and
one `checkpoint_every` (the sweep file's own, which applies to every study, else the value its
studies share).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipeline.errors import UserError
from pipeline.models import find_spec, get_spec
from pipeline.yaml_input import read_yaml

Metric = Literal["val/acc", "val/loss", "train/acc", "train/loss"]
DistributionKind = Literal["loguniform", "uniform", "randint", "choice"]

# The metrics every trial reports each epoch: what a search or a scheduler may optimise.
REPORTED_METRICS: tuple[str, ...] = get_args(Metric)
DISTRIBUTIONS: tuple[str, ...] = get_args(DistributionKind)

# Study and sweep names end up inside MLflow search filters (quoted with ') and Ray's directory
# names, so they are restricted to characters that need no quoting or escaping anywhere.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,100}")
NAME_RULE = "letters, digits, '_', '.' and '-' only, 1 to 100 characters"

# Short names of params, in run names ("q2_lr lr=0.1 seed=42"), the report's row labels and the
# reference file's configs (`lr=0.01;epochs=50`); the one map, both ways.
SHORT_NAMES = {"learning_rate": "lr", "batch_size": "batch", "l2_decay": "l2",
               "hidden_size": "hidden"}
LONG_NAMES = {short: name for name, short in SHORT_NAMES.items()}


class TrialConfig(BaseModel):
    """Everything one trial depends on; its field names are the YAML keys and MLflow params."""

    # allow_inf_nan: `lr: .inf` or `.nan` is valid YAML and a valid Python float, never a
    # valid setting.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    study: str = Field(min_length=1)
    model: str  # a registered model (pipeline.models): checked by _registered_model
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
    # Float precision of the weights: float64 for the numpy models (the homework's), float32 for
    # torch; filled in from the model when not written, so the logged param always says it.
    dtype: Literal["float64", "float32"] = "float64"

    @field_validator("seed", "epochs", "learning_rate", "batch_size", "hidden_size", "layers",
                     "dropout", "l2_decay", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads True as 1 and YAML reads yes/on/true as True: `epochs: true` would
        # silently train one epoch.
        return _refuse_boolean(info.field_name or "?", value,
                               cls.model_fields[info.field_name or "seed"].annotation is int)

    @field_validator("model", mode="after")
    @classmethod
    def _registered(cls, model: str) -> str:
        return _registered_model(model)

    @model_validator(mode="before")
    @classmethod
    def _dtype_from_the_model(cls, data: Any) -> Any:
        # The model's default precision (numpy: float64, the homework's; torch: float32), so
        # the logged param always says it.
        model = data.get("model") if isinstance(data, Mapping) else None
        spec = find_spec(model) if isinstance(model, str) else None
        if spec is not None and "dtype" not in data:
            return {**data, "dtype": spec.dtypes[0]}
        return data

    @model_validator(mode="after")
    def _options_fit_the_model(self) -> TrialConfig:
        # Each model's spec says which options it supports (e.g. the numpy models are the
        # homework's: no dropout or L2): say so when the space is loaded, not mid-sweep.
        get_spec(self.model).check(self)
        return self


TRIAL_KEYS = frozenset(TrialConfig.model_fields) - {"study", "model", "seed"}
# Integer fields: only randint or choice can sample them.
INT_KEYS = frozenset(k for k in TRIAL_KEYS if TrialConfig.model_fields[k].annotation is int)


@dataclass(frozen=True)
class Distribution:
    """A sampled parameter, as written under `params`: `kind` with `low`/`high` (ranges; for
    randint `high` is excluded, as in Ray) or `values` (choice; `low` and `high` are None)."""

    kind: DistributionKind
    low: float | int | None = None
    high: float | int | None = None
    values: tuple[Any, ...] = ()

    def ends(self) -> list[tuple[str, Any]]:
        """The extreme values it can draw, labelled: both bounds, or every choice."""
        if self.kind == "choice":
            return [("choice value", v) for v in self.values]
        if self.kind == "randint":
            return [("low bound", self.low), ("largest value (high - 1)", int(self.high) - 1)]
        return [("low bound", self.low), ("high bound", self.high)]

    def __str__(self) -> str:
        args = list(self.values) if self.kind == "choice" else [self.low, self.high]
        return _spell({self.kind: args})


class SearchSpec(BaseModel):
    """How trials are picked: every grid point (`grid`), or `num_samples` draws from the
    distributions by Ray's random search or by Optuna, best by `metric` in `mode`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    algorithm: Literal["grid", "random", "optuna"] = "grid"
    num_samples: int | None = Field(default=None, ge=1, strict=True)
    metric: Metric = "val/acc"
    mode: Literal["max", "min"] = "max"
    seed: int = Field(default=0, strict=True)

    @model_validator(mode="after")
    def _consistent(self) -> SearchSpec:
        if self.algorithm == "grid" and self.num_samples is not None:
            raise ValueError(f"search.num_samples = {self.num_samples}: a grid runs every "
                             "combination once per seed; expected no num_samples, or "
                             "search.algorithm random or optuna")
        if self.algorithm != "grid" and self.num_samples is None:
            raise ValueError(f"search.num_samples = None: {self.algorithm} search needs the "
                             "number of trials to draw; expected an int >= 1")
        better = "min" if self.metric.endswith("loss") else "max"
        if self.mode != better:
            raise ValueError(f"search.mode = {self.mode}: {self.metric} is better when "
                             f"{'smaller' if better == 'min' else 'larger'}; "
                             f"expected mode: {better}")
        return self

    @property
    def sampled(self) -> bool:
        """True for random or optuna search (the searcher picks the trials)."""
        return self.algorithm != "grid"


class AshaSpec(BaseModel):
    """Ray's ASHA early stopping: trials run at least `grace_period` epochs, a rung keeps the best
    1/`reduction_factor`, nothing runs past `max_t` epochs. `max_t` None (not written) means the
    study's largest epochs; `load_space` fills it in."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    grace_period: int = Field(default=1, ge=1, strict=True)
    reduction_factor: float = Field(default=2.0, gt=1)
    max_t: int | None = Field(default=None, ge=1, strict=True)

    @field_validator("reduction_factor", mode="before")
    @classmethod
    def _factor_not_a_boolean(cls, value: Any) -> Any:
        return _refuse_boolean("scheduler.asha.reduction_factor", value, integer=False)

    @model_validator(mode="after")
    def _grace_within_max_t(self) -> AshaSpec:
        if self.max_t is not None and self.grace_period > self.max_t:
            raise ValueError(f"scheduler.asha.grace_period = {self.grace_period}: more than "
                             f"max_t = {self.max_t}; expected grace_period <= max_t")
        return self


class StudySpec(BaseModel):
    """One study file: a model, fixed, gridded or sampled params, optional variants, seeds, and
    how it is searched, stopped early and checkpointed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    source: str = ""
    model: str  # a registered model (pipeline.models): checked by _registered_model
    seeds: list[int] = Field(default=[42], min_length=1)
    # value: a scalar (fixed), a list (grid) or a Distribution (sampled)
    params: dict[str, Any] = Field(default_factory=dict)
    variants: list[dict[str, Any]] = Field(default=[{}], min_length=1)
    search: SearchSpec = Field(default_factory=SearchSpec)
    scheduler: AshaSpec | None = None
    checkpoint_every: int = Field(default=1, ge=0, strict=True)

    @field_validator("name", mode="after")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        return check_name(name, "name")

    @field_validator("model", mode="after")
    @classmethod
    def _registered(cls, model: str) -> str:
        return _registered_model(model)

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds_not_booleans(cls, seeds: Any) -> Any:
        for seed in seeds if isinstance(seeds, list) else []:
            _refuse_boolean("seeds", seed, integer=True)
        return seeds

    @field_validator("params", mode="after")
    @classmethod
    def _distributions(cls, params: dict[str, Any]) -> dict[str, Any]:
        return {k: _parse_distribution(k, v) if isinstance(v, dict) else v
                for k, v in params.items()}

    @field_validator("scheduler", mode="before")
    @classmethod
    def _named_scheduler(cls, value: Any) -> Any:
        if value is None or isinstance(value, AshaSpec):
            return value
        expected = "expected {asha: {grace_period: 1, reduction_factor: 2, max_t: epochs}}"
        if not isinstance(value, dict) or len(value) != 1:
            raise ValueError(f"scheduler = {_spell(value)}: not one named scheduler; {expected}")
        ((name, options),) = value.items()
        if name != "asha":
            raise ValueError(f"scheduler = {_spell(value)}: unknown scheduler {name!r}; "
                             f"{expected}")
        try:
            return AshaSpec.model_validate({} if options is None else options)
        except ValidationError as exc:
            raise ValueError(_describe(exc, within="scheduler.asha")) from None

    @model_validator(mode="after")
    def _search_fits_params(self) -> StudySpec:
        search = self.search
        for key, value in self.params.items():
            if isinstance(value, Distribution) and not search.sampled:
                raise ValueError(f"params.{key} = {value}: a distribution needs sampled search; "
                                 "expected a list (grid), or search: {algorithm: random | "
                                 "optuna, num_samples: N}")
            if isinstance(value, list) and search.algorithm == "optuna":
                raise ValueError(f"params.{key} = {_spell(value)}: optuna cannot search a grid; "
                                 f"expected a distribution: use {{choice: {_spell(value)}}}")
        if not search.sampled:
            return self
        where = f"search.algorithm = {search.algorithm}"
        if not any(isinstance(v, Distribution) for v in self.params.values()):
            raise ValueError(f"{where}: no param is a distribution, so every sample would be the "
                             "same; expected at least one {loguniform|uniform|randint|choice: "
                             "[...]} under params")
        if len(self.variants) > 1:
            raise ValueError(f"variants = {_spell(self.variants)}: {where} samples one space; "
                             "expected at most one variant (make the choice a param, e.g. "
                             "{choice: [...]})")
        if len(self.seeds) != 1:
            raise ValueError(f"seeds = {self.seeds}: {where} runs one seed; expected exactly "
                             "one seed (e.g. seeds: [42])")
        return self


@dataclass(frozen=True)
class PlannedTrial:
    """A trial config and its readable run name; `also` names the same training in other
    studies (study -> its run name there), which `merge_identical` folded into this one."""

    config: TrialConfig
    name: str
    also: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Sweep:
    """A loaded search space: its studies, the file it came from and a hash of its content, and
    the sweep-wide search block, scheduler (its `max_t` resolved) and checkpoint interval."""

    name: str
    path: Path
    content_sha256: str
    studies: tuple[StudySpec, ...]
    search: SearchSpec = field(default_factory=SearchSpec)
    scheduler: AshaSpec | None = None
    checkpoint_every: int = 1

    @property
    def sampled_study(self) -> StudySpec | None:
        """The sweep's one sampled (random or optuna) study, else None (a grid sweep)."""
        sampled = [s for s in self.studies if s.search.sampled]
        return sampled[0] if sampled else None


def load_space(path: str | Path) -> Sweep:
    """Load and validate a study or sweep YAML; every problem is a one-line `UserError`."""
    path = Path(path)
    raw, content = _read_yaml(path)
    digest = hashlib.sha256(content)
    checkpoint_every: int | None = None
    if "include" in raw:
        extra = set(raw) - {"name", "description", "include", "checkpoint_every"}
        if extra:
            raise UserError(f"{path}: unknown key '{sorted(extra)[0]}'; a sweep file has only "
                            "name, description, include and checkpoint_every")
        includes = raw["include"]
        if not isinstance(includes, list) or not includes:
            raise UserError(f"{path}: include = {includes!r}; expected a non-empty list of files")
        if "checkpoint_every" in raw:
            checkpoint_every = raw["checkpoint_every"]
            if type(checkpoint_every) is not int or checkpoint_every < 0:
                raise UserError(f"{path}: checkpoint_every = {checkpoint_every!r}: not a whole "
                                "number of epochs; expected an int >= 0 (0 = no checkpoints)")
        studies = []
        for item in includes:
            child = path.parent / str(item)
            child_raw, child_content = _read_yaml(child)
            studies.append(_load_study(child, child_raw))
            digest.update(child_content)
        name = str(raw.get("name") or path.stem)
        try:
            check_name(name, "name" if raw.get("name") else "name (the file's stem, as it has "
                       "no name key)")
        except ValueError as exc:
            raise UserError(f"{path}: {exc}") from None
    else:
        studies = [_load_study(path, raw)]
        name = studies[0].name
    _check_unique(path, [s.name for s in studies])
    search = _sweep_search(path, studies, raw.get("include"))
    scheduler = _sweep_scheduler(path, studies)
    if checkpoint_every is None:
        checkpoint_every = _shared(path, studies, "checkpoint_every",
                                   "one checkpoint_every for the sweep: the same in every "
                                   "study, or set once in the sweep file")
    studies = [s.model_copy(update={
        "checkpoint_every": checkpoint_every,
        "scheduler": s.scheduler and _resolved(s.scheduler, _max_epochs(s)),
    }) for s in studies]
    return Sweep(name, path, digest.hexdigest(), tuple(studies), search, scheduler,
                 checkpoint_every)


def with_seeds(sweep: Sweep, seeds: tuple[int, ...] | None) -> Sweep:
    """The sweep with every study's seeds replaced (`medgrid tune --seeds`; None: as the files
    say). A sampled study runs one seed per sample, so it takes one seed only."""
    if seeds is None:
        return sweep
    if sweep.sampled_study is not None and len(seeds) > 1:
        raise UserError(f"--seeds {','.join(map(str, seeds))}: {sweep.path} is a sampled study, "
                        "which runs one seed per sample; expected one seed")
    studies = tuple(s.model_copy(update={"seeds": list(seeds)}) for s in sweep.studies)
    return dataclasses.replace(sweep, studies=studies)


def expand(sweep: Sweep) -> list[PlannedTrial]:
    """Every trial of a grid sweep, in file order: grid x variants x seeds per study.

    A sampled sweep (random or optuna) returns []: its trials are drawn by the searcher while it
    runs, so there is no list beforehand; use `sampled_space` for it.
    """
    return [trial for study in sweep.studies for trial in expand_study(study)]


def planned_trials(sweep: Sweep) -> int:
    """How many trials the sweep plans, counted without expanding it (a 10^7-point grid does
    not fit in memory as configs): a grid study's grid points x variants x seeds, a sampled
    study's num_samples x its grid points (Ray repeats a grid for every sample). Identical
    configurations that `merge_identical` later folds together count once per study."""
    total = 0
    for study in sweep.studies:
        grid = math.prod(len(v) for v in study.params.values() if isinstance(v, list))
        if study.search.sampled:
            total += grid * (study.search.num_samples or 0)
        else:
            total += grid * len(study.variants) * len(study.seeds)
    return total


def merge_identical(trials: list[PlannedTrial]) -> list[PlannedTrial]:
    """Train an identical configuration once: trials of different studies whose configs differ
    only in `study` (e.g. q2_lr lr=0.1 and q2_batch batch=16, both the homework's default FFN)
    become one, the first in file order, whose `also` records the others' studies and names."""
    merged: dict[str, PlannedTrial] = {}
    for trial in trials:
        key = training_key(trial.config)
        first = merged.get(key)
        if first is None:
            merged[key] = trial
        elif trial.config.study not in (first.config.study, *first.also):
            merged[key] = dataclasses.replace(first, also={**first.also,
                                                           trial.config.study: trial.name})
    return list(merged.values())


def training_key(config: TrialConfig) -> str:
    """What a trial's training depends on: every field but the study it is reported in."""
    return repr(sorted(config.model_dump(exclude={"study"}).items()))


def expand_study(study: StudySpec) -> list[PlannedTrial]:
    """The trials of one grid study (configs were validated when the file was loaded); [] for a
    sampled study."""
    if study.search.sampled:
        return []
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


def sampled_space(study: StudySpec) -> dict[str, Any]:
    """The study as one flat search space: `study`, `model` and `seed` fixed, then every
    TrialConfig field the study sets (params in file order, then its one variant's values), each
    a fixed value, a `list` (a grid) or a `Distribution`. Fields the study does not set keep
    TrialConfig's defaults and are absent.

    Raises ValueError for a study with several variants or seeds (a grid study: use
    `expand_study`); a sampled study always has one of each.
    """
    if len(study.variants) > 1 or len(study.seeds) > 1:
        raise ValueError(f"study {study.name} has {len(study.variants)} variants and "
                         f"{len(study.seeds)} seeds; one search space needs one of each "
                         "(use expand_study for a grid study)")
    return {"study": study.name, "model": study.model, "seed": study.seeds[0],
            **study.params, **study.variants[0]}


def sampled_keys(study: StudySpec) -> list[str]:
    """The params that vary (lists and distributions), in file order."""
    return [k for k, v in study.params.items() if isinstance(v, (list, Distribution))]


def config_from_values(study: StudySpec, values: Mapping[str, Any]) -> TrialConfig:
    """The validated TrialConfig of one drawn point: the study's fixed values overlaid with
    `values` (a flat dict such as Ray's trial config, keys among TrialConfig's fields; numpy
    scalars are turned into plain Python values). Every varying key must have a value; `study`
    and `model`, if given, must be the study's. Problems are a one-line UserError."""
    where = f"study {study.name}"
    merged = dict(sampled_space(study))
    for key, value in values.items():
        if key not in TrialConfig.model_fields:
            raise UserError(f"{where}: unknown key '{key}' in the drawn values; expected "
                            f"TrialConfig fields {sorted(TrialConfig.model_fields)}")
        value = _plain(value)
        if key in ("study", "model") and value != merged[key]:
            raise UserError(f"{where}: {key} = {value!r} in the drawn values; "
                            f"expected {merged[key]!r}")
        merged[key] = value
    for key, value in merged.items():
        if isinstance(value, (list, Distribution)):
            shown = value if isinstance(value, Distribution) else _spell(value)
            raise UserError(f"{where}: {key} has no drawn value; expected one value from "
                            f"{shown}")
    try:
        return TrialConfig(**merged)
    except ValidationError as exc:
        raise UserError(f"{where}: {_describe(exc)}") from exc


def trial_name(study: StudySpec, config: TrialConfig) -> str:
    """The readable run name of a trial of `study`.

    Sampled study: the study name, each varying key by its short name with the value rounded to
    3 significant digits, then the seed, e.g. `explore_ffn lr=0.0316 dropout=0.12 l2=3.16e-05
    seed=42`; two draws that agree to 3 digits get the same name (the tune layer may add the
    trial id). Grid study: exactly the name `expand_study` gives that config (ValueError if the
    config is not one of its trials).
    """
    if not study.search.sampled:
        for trial in expand_study(study):
            if trial.config == config:
                return trial.name
        raise ValueError(f"{config!r} is not one of study {study.name}'s planned trials")
    label = [f"{SHORT_NAMES.get(k, k)}={_short_value(getattr(config, k))}"
             for k in sampled_keys(study)]
    return " ".join([study.name, *label, f"seed={config.seed}"])


def _fmt(key: str, value: Any) -> str:
    return f"{SHORT_NAMES.get(key, key)}={value}"


def _short_value(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _plain(value: Any) -> Any:
    """A numpy scalar as the plain Python value (np.int64 -> int, np.float64 -> float)."""
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return value.item()
    return value


def _spell(value: Any) -> str:
    """A value as the user would write it in YAML, on one line: {uniform: [0.0, 1.0]}."""
    try:
        text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    except yaml.YAMLError:
        return repr(value)
    return text.removesuffix("\n...").strip()  # a lone scalar ends with YAML's "..."


def _registered_model(model: str) -> str:
    """`model` if a module of pipeline/models defines it; else ValueError (one line) naming
    the models there are."""
    get_spec(model)
    return model


def check_name(name: str, key: str) -> str:
    """`name` if it follows NAME_RULE; else ValueError (one line) naming `key` and the rule."""
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"{key} = {name!r}: a name may contain {NAME_RULE}, as it names MLflow "
                         "runs and Ray directories; expected e.g. q2_lr")
    return name


def _refuse_boolean(key: str, value: Any, integer: bool) -> Any:
    """`value`, unless it is a boolean where a number is expected (ValueError, one line)."""
    if isinstance(value, bool):
        what = "an integer" if integer else "a number"
        raise ValueError(f"{key} = {_spell(value)}: a boolean where {what} is expected; "
                         f"expected {what} (YAML reads true/false, yes/no, on/off as booleans)")
    return value


def _number(value: Any, integer: bool) -> int | float | None:
    """A finite YAML number (text such as "1e-6", which YAML 1.1 leaves as a string, is read as
    a float like pydantic does); None if it is not one. `integer`: ints only."""
    if isinstance(value, bool):
        return None
    if integer:
        return value if isinstance(value, int) else None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _parse_distribution(key: str, value: dict[Any, Any]) -> Distribution:
    """`{kind: args}` under params.<key> as a Distribution; ValueError (one line) if invalid."""
    where = f"params.{key} = {_spell(value)}"
    if len(value) != 1:
        raise ValueError(f"{where}: a mapping must name one distribution; expected one of "
                         "{loguniform|uniform|randint|choice: [...]}")
    ((kind, args),) = value.items()
    if kind not in DISTRIBUTIONS:
        raise ValueError(f"{where}: unknown distribution {kind!r}; expected one of "
                         f"{', '.join(DISTRIBUTIONS)}")
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ValueError(f"{where}: choice needs a non-empty list of values; expected "
                             "{choice: [v1, v2, ...]}")
        return Distribution("choice", values=tuple(args))
    expected = {"loguniform": "{loguniform: [low, high]} with numbers 0 < low < high",
                "uniform": "{uniform: [low, high]} with numbers low < high",
                "randint": "{randint: [low, high]} with integers low < high (high excluded)"}
    expected_text = f"expected {expected[kind]}"
    if key in INT_KEYS and kind != "randint":
        raise ValueError(f"{where}: {key} is an integer and {kind} draws floats; expected "
                         "{randint: [low, high]} or {choice: [...]}")
    if not isinstance(args, list) or len(args) != 2:
        raise ValueError(f"{where}: {kind} takes two bounds; {expected_text}")
    low, high = (_number(a, integer=kind == "randint") for a in args)
    if low is None or high is None:
        what = "integers" if kind == "randint" else "finite numbers"
        raise ValueError(f"{where}: the bounds are not {what}; {expected_text}")
    if kind == "loguniform" and low <= 0:
        raise ValueError(f"{where}: low bound {low} <= 0 has no logarithm; {expected_text}")
    if low >= high:
        raise ValueError(f"{where}: low bound {low} is not below high bound {high}; "
                         f"{expected_text}")
    return Distribution(kind, low, high)


def _read_yaml(path: Path) -> tuple[dict[str, Any], bytes]:
    """The top-level mapping of a space file (read within yaml_input's bounds) and its bytes."""
    raw, content = read_yaml(path)
    if not isinstance(raw, dict):
        raise UserError(f"{path}: top level is {type(raw).__name__}; expected a mapping of keys")
    return raw, content


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
    for index, variant in enumerate(study.variants):
        for key, value in variant.items():
            if isinstance(value, (list, dict)):
                raise UserError(f"{path}: variants[{index}].{key} = {_spell(value)}: a variant "
                                "sets one value per key; expected a single value (a grid or a "
                                "distribution goes under params)")
    # Validate every trial now, so that a bad value fails before anything launches; for a
    # distribution, both ends of its range (or every choice).
    for seed in study.seeds:
        for variant in study.variants:
            for key, value in {**study.params, **variant}.items():
                if isinstance(value, Distribution):
                    for label, item in value.ends():
                        _check_value(path, study, seed, key, item, (value, label))
                    continue
                for item in value if isinstance(value, list) else [value]:
                    _check_value(path, study, seed, key, item)
    _check_complete(path, study)
    asha = study.scheduler
    if asha is not None and asha.max_t is None and asha.grace_period > _max_epochs(study):
        raise UserError(f"{path}: scheduler.asha.grace_period = {asha.grace_period}: more than "
                        f"max_t = {_max_epochs(study)} (the study's epochs); expected "
                        "grace_period <= max_t")
    return study


def _check_value(path: Path, study: StudySpec, seed: int, key: str, value: Any,
                 sampled: tuple[Distribution, str] | None = None) -> None:
    """Refuse `value` for `key` (a bound or choice of `sampled`, if given) with the study's other
    params at a representative value. An error located at another key is left to that key's
    own check, which always comes: the message then names the right key and value."""
    base = {k: _representative(v) for k, v in study.params.items()}
    try:
        TrialConfig(study=study.name, model=study.model, seed=seed, **{**base, key: value})
    except ValidationError as exc:
        errors = exc.errors()
        mine = [e for e in errors if tuple(e["loc"]) == (key,)]
        # a whole-config rule (e.g. an option the model lacks) names its own key and value
        rule = [e for e in errors if not e["loc"] and e["type"] == "value_error"]
        if not mine and not rule:
            return
        line = _describe(exc, prefix=key, err=(mine or rule)[0])
        if sampled is not None and (mine or line.startswith(f"{key} = ")):
            dist, label = sampled
            raise UserError(f"{path}: params.{key} = {dist}: its {label} {value!r} is refused "
                            f"({line}); expected a range every value of which {key} "
                            "accepts") from exc
        raise UserError(f"{path}: {line}") from exc


def _check_complete(path: Path, study: StudySpec) -> None:
    """One trial per variant, at representative values: a key every trial needs (epochs,
    learning_rate) that is set nowhere would otherwise first fail when the grid is expanded,
    as a traceback."""
    base = {k: _representative(v) for k, v in study.params.items()}
    for variant in study.variants:
        try:
            TrialConfig(study=study.name, model=study.model, seed=study.seeds[0],
                        **{**base, **variant})
        except ValidationError as exc:
            missing = [e["loc"][0] for e in exc.errors() if e["type"] == "missing"]
            if missing:
                raise UserError(f"{path}: missing key 'params.{missing[0]}'; expected it under "
                                "params (or in every variant): every trial needs it") from exc
            raise UserError(f"{path}: {_describe(exc)}") from exc


def _representative(value: Any) -> Any:
    """One value a param can take, to stand in for it while another key is checked."""
    if isinstance(value, Distribution):
        return value.ends()[0][1]
    return value[0] if isinstance(value, list) else value


def _max_epochs(study: StudySpec) -> int:
    """The most epochs any trial of the study runs (ASHA's default max_t)."""
    values: list[Any] = []
    for source in [study.params, *study.variants]:
        value = source.get("epochs")
        if isinstance(value, Distribution):
            values += [v for _, v in value.ends()]
        elif isinstance(value, list):
            values += value
        elif value is not None:
            values.append(value)
    return max(int(float(v)) for v in values)


def _resolved(asha: AshaSpec, max_epochs: int) -> AshaSpec:
    return asha if asha.max_t is not None else asha.model_copy(update={"max_t": max_epochs})


def _sweep_search(path: Path, studies: list[StudySpec], includes: Any) -> SearchSpec:
    """The sweep's one search block: its sampled study's (then it is alone), else the grid
    studies' common one."""
    sampled = [s for s in studies if s.search.sampled]
    if sampled and len(studies) > 1:
        raise UserError(f"{path}: include = {_spell(includes)}: study '{sampled[0].name}' uses "
                        f"{sampled[0].search.algorithm} search, which runs alone; expected grid "
                        "studies only, or exactly one sampled study and nothing else")
    return _shared(path, studies, "search",
                   "one search block for the sweep: the same in every grid study")


def _sweep_scheduler(path: Path, studies: list[StudySpec]) -> AshaSpec | None:
    """The sweep's one scheduler (it stops trials of every study alike), max_t resolved to the
    largest epochs of all its studies if not written."""
    written = _shared(path, studies, "scheduler",
                      "one scheduler for the sweep, as it stops trials of every study: the "
                      "same in every included study, or none")
    if written is None:
        return None
    return _resolved(written, max(_max_epochs(s) for s in studies))


def _shared(path: Path, studies: list[StudySpec], key: str, remedy: str) -> Any:
    """The value of `key` that every study has; one-line UserError naming the first two that
    differ."""
    first = getattr(studies[0], key)
    for study in studies[1:]:
        value = getattr(study, key)
        if value != first:
            raise UserError(f"{path}: {key} differs between studies ('{studies[0].name}': "
                            f"{_show(first)}, '{study.name}': {_show(value)}); expected {remedy}")
    return first


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, BaseModel):
        written = value.model_dump(exclude_defaults=True)
        return _spell(written) if written else "defaults"
    return _spell(value)


def _check_unique(path: Path, names: list[str]) -> None:
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise UserError(f"{path}: study name '{sorted(duplicates)[0]}' appears twice; "
                        "expected unique study names")


def _describe(exc: ValidationError, prefix: str | None = None, within: str = "",
              err: Any = None) -> str:
    """One line from pydantic's first error (or `err`, one of its errors): key, offending value,
    what is expected.

    Our own validators (type `value_error`) write the whole line themselves; `within` prefixes
    the key path of an object validated on its own (e.g. "scheduler.asha")."""
    err = err or exc.errors()[0]
    if err["type"] == "value_error":  # one of our rules: its message says it all
        return str(err["ctx"]["error"])
    loc = ".".join(str(p) for p in err["loc"])
    key = ".".join(p for p in (within, loc) if p) or (prefix or "?")
    value = err.get("input")
    if err["type"] == "missing":
        return f"missing key '{key}'"
    if err["type"] == "extra_forbidden":
        return f"unknown key '{key}'"
    return f"{key} = {value!r}: {err['msg'].lower()}"
