"""Find a sweep in MLflow and read its trials into one tidy DataFrame,
one row per trial (the planned trials that never got a run included, as MISSING).

Reads through `TrackingClient` only (never the database file), so a local store and a tracking
server behave the same. The tables need what `search_runs` returns (final metrics, params, tags:
`diverged`, `stopped_early` = "true" and `stopped_epoch` = "k" for a trial the scheduler stopped
after epoch k; the parent's `medgrid.sampled` for a sampled sweep), each run's `epoch_time_s`
history (training time), and two optional artifacts of each finished run: `val_correct.npy`
(1-D bool, True where the trial got that validation image right, in split order; absent for
diverged trials and older runs) for the paired tests, and `confusion_matrix.csv` (test set, rows
true, columns predicted) to spot a constant prediction.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import TrialConfig, expand, load_space, with_seeds
from pipeline.errors import UserError
from pipeline.tracking import names
from pipeline.tracking.client import TrackingClient, first_line
from pipeline.tracking.records import RunRecord, TrackingError

# Params are logged as text; their types come from TrialConfig, so a new numeric field needs
# no change here.
NUMERIC_PARAMS: dict[str, type] = {k: f.annotation for k, f in TrialConfig.model_fields.items()
                                   if f.annotation in (int, float)}
# A run logged before a field existed read what the field's default says now, except where older
# runs are known to have done otherwise: before `dtype` every run trained in float32.
LEGACY_DEFAULTS = {"dtype": "float32"}
CONFIG_PARAMS = tuple(k for k in TrialConfig.model_fields if k not in ("study", "seed"))
METRICS = names.TRIAL_METRICS
LEAD_COLUMNS = ("study", "seed", "status", "diverged", "stopped_early", "stopped_epoch", "run_id",
                "run_name")
# assumed: the params a run lacked (logged before the field existed), read with defaults
TAIL_COLUMNS = ("duration_s", "attempt", "node", "error", "studies", "assumed")
HISTORY_THREADS = 8  # histories are one request per run and metric: overlap their latency
SAMPLED_TAG = names.SAMPLED_TAG  # on a sampled sweep's parent: JSON {param: distribution kind}
# Distribution kinds, and "grid" for a list that random search repeats for every sample.
SAMPLED_KINDS = ("loguniform", "uniform", "randint", "choice", "grid")
CORRECT_FILE = names.CORRECT_FILE  # 1-D bool: the trial got that validation image right
CONFUSION_FILE = names.CONFUSION_FILE  # rows true, columns predicted (test set)


@dataclass(frozen=True)
class SweepInfo:
    """The sweep's parent run, as the report describes it."""

    run_id: str
    name: str
    experiment: str
    experiment_id: str
    status: str
    start_time: int
    artifact_uri: str
    tags: dict[str, str]
    params: dict[str, str]

    @property
    def dataset(self) -> str:
        """Which data the trials used: octmnist, synthetic or a file stem."""
        return self.tags.get(names.DATASET_TAG) or self.params.get("dataset") or "unknown"

    @property
    def sampled(self) -> dict[str, str]:
        """{param: distribution kind} of a sampled sweep (tag `medgrid.sampled`), else {}."""
        text = self.tags.get(SAMPLED_TAG)
        if not text:
            return {}
        try:
            kinds = json.loads(text)
        except ValueError:
            kinds = None
        if not isinstance(kinds, dict) or not all(
                isinstance(k, str) and v in SAMPLED_KINDS for k, v in kinds.items()):
            raise UserError(f"sweep run {self.run_id}: tag {SAMPLED_TAG} = {text[:80]!r}; "
                            f"expected a JSON object {{param: one of {', '.join(SAMPLED_KINDS)}}}")
        return kinds

    def count(self, key: str) -> int | None:
        """An integer param of the parent run (n_val, n_test, n_trials), if recorded."""
        try:
            return int(self.params[key])
        except (KeyError, ValueError):
            return None


def find_sweep(client: TrackingClient, experiment: str | None, run_id: str | None) -> SweepInfo:
    """The sweep's parent run: `run_id`, or the latest sweep of `experiment` (default medgrid)."""
    try:
        return _find_sweep(client, experiment, run_id)
    except TrackingError as exc:
        raise UserError(f"MLflow at {client.tracking_uri}: {first_line(exc)}") from exc


def _find_sweep(client: TrackingClient, experiment: str | None, run_id: str | None) -> SweepInfo:
    kind = names.KIND_TAG
    if run_id is not None:
        try:
            run = client.run(run_id)
        except TrackingError as exc:
            raise UserError(f"--sweep {run_id}: no such run in {client.tracking_uri}; expected "
                            "the run id of a sweep's parent run") from exc
        if not run.active:
            raise UserError(f"--sweep {run_id}: run '{run.name}' is deleted; expected "
                            "an active sweep's parent run")
        exp = client.experiment(run.experiment_id)
        if experiment is not None and exp.name != experiment:
            raise UserError(f"--sweep {run_id} belongs to experiment '{exp.name}', not "
                            f"'{experiment}'; expected a sweep of the named experiment")
        if run.tags.get(kind) != names.SWEEP_KIND:
            raise UserError(f"--sweep {run_id}: run '{run.name}' is not a sweep's "
                            f"parent run (tag {kind} != '{names.SWEEP_KIND}')")
        return _sweep_info(run, exp.name)
    name = experiment or "medgrid"
    found = client.experiment_named(name)
    if found is None or not found.active:
        known = sorted(e.name for e in client.experiments(limit=20))
        raise UserError(f"--experiment '{name}' not found in {client.tracking_uri}; expected "
                        f"one of {known}")
    runs = client.find_runs([found.experiment_id], f"tags.`{kind}` = '{names.SWEEP_KIND}'",
                            limit=1, newest_first=True)
    if not runs:
        raise UserError(f"experiment '{name}' has no sweep runs (tag {kind} = "
                        f"'{names.SWEEP_KIND}'); expected runs written by `medgrid tune`")
    return _sweep_info(runs[0], name)


def _sweep_info(run: RunRecord, experiment: str) -> SweepInfo:
    return SweepInfo(run.run_id, run.tags.get(names.SWEEP_TAG, run.name or "?"),
                     experiment, run.experiment_id, run.status, int(run.start_time or 0),
                     run.artifact_uri, dict(run.tags), dict(run.params))


def read_trials(client: TrackingClient, sweep: SweepInfo) -> pd.DataFrame:
    """Every child run of the sweep, one row each, plus a MISSING row per planned trial
    without a run; columns as in `summary.csv`."""
    try:
        runs = client.find_runs([sweep.experiment_id],
                                f"tags.`{names.PARENT_TAG}` = '{sweep.run_id}'")
    except TrackingError as exc:
        raise UserError(f"MLflow at {client.tracking_uri}: {first_line(exc)}") from exc
    if not runs:
        raise UserError(f"sweep run {sweep.run_id} ('{sweep.name}') has no trial runs; "
                        "expected child runs written by `medgrid tune`")
    rows = [row for run in sorted(runs, key=lambda r: r.start_time or 0)
            for row in _study_rows(_trial_row(run), run.tags.get(names.ALSO_TAG))]
    named = {row["run_name"] for row in rows}
    planned = planned_trials(sweep)
    rows += [_missing_row(config, name) for name, config in planned.items()
             if name not in named]
    # Studies in the space's order where the space is still there, else in the order they ran.
    return in_reading_order(_tidy(pd.DataFrame(rows)),
                            [config.study for config in planned.values()])


def one_row_per_run(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials as runs: a run shared by several studies once (its first study's row).
    Rows without a run id (planned trials that never ran, tables built by hand) are kept."""
    if "run_id" not in trials:
        return trials
    shared = trials["run_id"].notna() & trials["run_id"].ne("") & trials["run_id"].duplicated()
    return trials[~shared]


def _study_rows(row: dict[str, Any], also: str | None) -> list[dict[str, Any]]:
    """The trial's row, and one more per other study its training was shared with (same run,
    that study's name), so that each study's table reads it; `studies` lists them all."""
    try:
        shared = dict(json.loads(also)) if also else {}
    except (ValueError, TypeError):
        shared = {}  # a hand-edited tag: the run still counts for its own study
    row["studies"] = ",".join([row["study"], *shared])
    return [row, *({**row, "study": study, "run_name": str(name)}
                   for study, name in shared.items())]


def _trial_row(run: RunRecord) -> dict[str, Any]:
    """One trial's flat record; a run without medgrid's tags and params is an older schema."""
    tags, params = run.tags, dict(run.params)
    where = f"run {run.run_id} ('{run.name}')"
    if names.STUDY_TAG not in tags:
        raise UserError(f"{where} has no 'study' tag; expected trial runs written by this "
                        "version of `medgrid tune` (older schema?)")
    assumed = ";".join(k for k in TrialConfig.model_fields if k not in params
                       and k in config_defaults())
    params = {**config_defaults(), **params}
    absent = [k for k in TrialConfig.model_fields if k not in params]
    if absent:
        raise UserError(f"{where} lacks param '{absent[0]}', which has no default; expected "
                        "every required TrialConfig field as a param (older schema?)")
    for key, kind in NUMERIC_PARAMS.items():
        try:
            params[key] = kind(params[key])
        except (TypeError, ValueError):
            raise UserError(f"{where}: param {key} = {params[key]!r}; expected "
                            f"{'an integer' if kind is int else 'a number'}") from None
    end = run.end_time if run.status != names.RUNNING else None
    return {
        **params, "study": tags[names.STUDY_TAG], "run_id": run.run_id, "run_name": run.name,
        "status": run.status, "diverged": tags.get(names.DIVERGED_TAG) == "true",
        "stopped_early": tags.get(names.STOPPED_TAG) == "true",
        "stopped_epoch": _int_or_nan(tags.get(names.STOPPED_EPOCH_TAG)),
        **run.metrics,
        "duration_s": (end - run.start_time) / 1000 if end and run.start_time else np.nan,
        "attempt": tags.get(names.ATTEMPT_TAG, ""), "node": tags.get(names.NODE_TAG, ""),
        "error": tags.get(names.ERROR_TAG, ""), "assumed": assumed,
    }


def config_defaults() -> dict[str, str]:
    """What a run that lacks a param is read with: the field's default as the run would have
    logged it (text), or its legacy value (`LEGACY_DEFAULTS`); required fields have none."""
    defaults = {k: str(f.default) for k, f in TrialConfig.model_fields.items()
                if not f.is_required()}
    return {**defaults, **LEGACY_DEFAULTS}


def _int_or_nan(text: str | None) -> float:
    try:
        return int(text) if text is not None else np.nan
    except ValueError:
        return np.nan


def _missing_row(config: TrialConfig, name: str) -> dict[str, Any]:
    return {**config.model_dump(), "run_id": "", "run_name": name, "status": "MISSING",
            "diverged": False, "stopped_early": False}


def planned_trials(sweep: SweepInfo) -> dict[str, TrialConfig]:
    """The sweep's planned trials by run name, when its space file is still there unchanged
    (else {}: the report then compares the run count with the parent's n_trials)."""
    space = Path(sweep.tags.get(names.SPACE_FILE_TAG, ""))
    if not sweep.tags.get(names.SPACE_FILE_TAG) or not space.is_file():
        return {}
    try:
        loaded = load_space(space)
    except UserError:
        return {}
    if loaded.content_sha256 != sweep.tags.get(names.SPACE_SHA_TAG):
        return {}
    seeds = sweep.params.get("override.seeds")
    if seeds:
        loaded = with_seeds(loaded, tuple(int(s) for s in seeds.split(",")))
    cap = sweep.params.get("override.epochs_cap")
    plans = {}
    for trial in expand(loaded):
        config = trial.config
        if cap is not None and config.epochs > int(cap):
            config = config.model_copy(update={"epochs": int(cap)})
        plans[trial.name] = config
    return plans


def _tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns in a fixed, readable order: who, config, final metrics, bookkeeping."""
    for column in (*METRICS, *TAIL_COLUMNS, "stopped_epoch"):
        if column not in frame:
            frame[column] = np.nan if column in (*METRICS, "duration_s", "stopped_epoch") else ""
    known = {*LEAD_COLUMNS, *CONFIG_PARAMS, *METRICS, *TAIL_COLUMNS}
    others = sorted(c for c in frame.columns if c not in known)
    metric_like = [c for c in others if "/" in c]  # metrics beyond the standard ones
    params = [c for c in others if c not in metric_like]
    order = [*LEAD_COLUMNS, *CONFIG_PARAMS, *params, *METRICS, *metric_like, *TAIL_COLUMNS]
    frame = frame[order].copy()
    for column in ("attempt", "node", "error", "assumed"):
        frame[column] = frame[column].fillna("")
    for column in ("diverged", "stopped_early"):
        frame[column] = frame[column].fillna(False).astype(bool)
    frame["stopped_epoch"] = frame["stopped_epoch"].astype("Int64")  # "3", never "3.0"
    return frame.reset_index(drop=True)


def in_reading_order(frame: pd.DataFrame, studies: Iterable[str] = ()) -> pd.DataFrame:
    """The rows by study (`studies`' order, then the others as they come), then by config and
    seed, not by when each run started: trials run side by side start in any order, and the
    same sweep must give the same tables and the same summary.csv."""
    rank = {study: i for i, study in enumerate(dict.fromkeys([*studies, *frame["study"]]))}
    keys = [c for c in (*CONFIG_PARAMS, "seed", "attempt", "run_name") if c in frame]
    ordered = frame.assign(_rank=frame["study"].map(rank)).sort_values(
        ["_rank", *keys], kind="stable", na_position="last", key=_sortable)
    return ordered.drop(columns="_rank").reset_index(drop=True)


def _sortable(column: pd.Series) -> pd.Series:
    """A column as numbers where every value is one (0.001 before 0.01 before 0.1 before 1),
    else as text."""
    numbers = pd.to_numeric(column, errors="coerce")
    return numbers if numbers.notna().sum() == column.notna().sum() else column.astype(str)


def fetch_histories(client: TrackingClient, run_ids: Iterable[str], keys: Iterable[str]
                    ) -> dict[str, pd.DataFrame]:
    """Per-epoch metrics of each run (index: epoch, one column per key), fetched concurrently."""
    run_ids, keys = list(dict.fromkeys(run_ids)), list(keys)

    def one(run_id: str) -> pd.DataFrame:
        columns = {}
        for key in keys:
            points = client.metric_history(run_id, key)
            columns[key] = pd.Series({p.step: p.value for p in points}, dtype=float)
        return pd.DataFrame(columns).sort_index()

    try:
        with ThreadPoolExecutor(HISTORY_THREADS) as pool:
            return dict(zip(run_ids, pool.map(one, run_ids), strict=True))
    except TrackingError as exc:
        raise UserError(f"MLflow at {client.tracking_uri}: {first_line(exc)}") from exc


def add_epoch_times(frame: pd.DataFrame, client: TrackingClient) -> pd.DataFrame:
    """`train_time_s` (sum of `epoch_time_s` over the epochs a run logged) and
    `epoch_time_mean_s` for every trial that has a run."""
    frame = frame.copy()
    at = frame.columns.get_loc("epoch_time_s") + 1
    frame.insert(at, "epoch_time_mean_s", np.nan)
    frame.insert(at, "train_time_s", np.nan)
    chosen = frame["run_id"].astype(bool)
    histories = fetch_histories(client, frame.loc[chosen, "run_id"], [names.EPOCH_TIME])
    for index in frame.index[chosen]:
        times = histories[frame.at[index, "run_id"]][names.EPOCH_TIME].dropna()
        if len(times):
            frame.at[index, "train_time_s"] = float(times.sum())
            frame.at[index, "epoch_time_mean_s"] = float(times.mean())
    return frame


@dataclass
class TrialArtifacts:
    """What the report reads from the trials' artifacts: per run id, which validation images it
    got right, and whether it predicted one class for every test image; runs whose artifacts
    could not be read, with the first reason."""

    correct: dict[str, np.ndarray]
    constant: dict[str, bool]
    unreadable: list[str]
    reason: str = ""


def read_trial_artifacts(client: TrackingClient, run_ids: Iterable[str]) -> TrialArtifacts:
    """`val_correct.npy` and `confusion_matrix.csv` of each run, where logged (older runs and
    diverged trials have no `val_correct.npy`)."""
    run_ids = list(dict.fromkeys(run_ids))
    found = TrialArtifacts({}, {}, [])
    with tempfile.TemporaryDirectory(prefix="medgrid-report-artifacts-") as tmp, \
            ThreadPoolExecutor(HISTORY_THREADS) as pool:
        results = pool.map(lambda r: _read_artifacts(client, r, Path(tmp) / r), run_ids)
        for run_id, (correct, constant, error) in zip(run_ids, results, strict=True):
            if error:
                found.unreadable.append(run_id)
                found.reason = found.reason or error
            if correct is not None:
                found.correct[run_id] = correct
            if constant is not None:
                found.constant[run_id] = constant
    return found


def _read_artifacts(client: TrackingClient, run_id: str, directory: Path
                    ) -> tuple[np.ndarray | None, bool | None, str]:
    """(val_correct, constant prediction, error) of one run; None where not logged."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        logged = client.artifact_names(run_id)
        correct = constant = None
        if CORRECT_FILE in logged:
            correct = np.load(client.fetch_artifact(run_id, CORRECT_FILE, directory),
                              allow_pickle=False)
            if correct.ndim != 1 or correct.dtype != np.bool_:
                raise ValueError(f"{CORRECT_FILE} is {correct.dtype} of shape {correct.shape}, "
                                 "expected a 1-D bool array")
        if CONFUSION_FILE in logged:
            path = client.fetch_artifact(run_id, CONFUSION_FILE, directory)
            matrix = pd.read_csv(path, index_col=0).to_numpy(dtype=float)
            constant = bool((matrix.sum(axis=0) > 0).sum() == 1)  # one predicted class
        return correct, constant, ""
    except Exception as exc:  # noqa: BLE001 -- an unreadable optional artifact is "not known"
        return None, None, f"run {run_id}: {first_line(exc)}"
