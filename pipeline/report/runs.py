"""Find a sweep in MLflow and read its trials into one tidy DataFrame,
one row per trial (the planned trials that never got a run included, as MISSING).

Reads through `MlflowClient` only (never the database file), so a local store and a tracking
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
import os
import tempfile
import urllib.parse
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.config import TrialConfig, expand, load_space, with_seeds
from pipeline.errors import UserError
from pipeline.tracking import runs as tracking
from pipeline.tracking.server import is_remote, require_server
from pipeline.tracking.store import upgrade_proxied_artifacts

INT_PARAMS = ("seed", "epochs", "batch_size", "hidden_size", "layers")
FLOAT_PARAMS = ("learning_rate", "dropout", "l2_decay")
CONFIG_PARAMS = tuple(k for k in TrialConfig.model_fields if k not in ("study", "seed"))
METRICS = ("train/loss", "train/loss_sum", "train/acc", "val/loss", "val/acc", "test/acc",
           "epoch_time_s")
LEAD_COLUMNS = ("study", "seed", "status", "diverged", "stopped_early", "stopped_epoch", "run_id",
                "run_name")
TAIL_COLUMNS = ("duration_s", "attempt", "node", "error", "studies")
HISTORY_THREADS = 8  # histories are one request per run and metric: overlap their latency
SAMPLED_TAG = "medgrid.sampled"  # on a sampled sweep's parent: JSON {param: distribution kind}
# Distribution kinds, and "grid" for a list that random search repeats for every sample.
SAMPLED_KINDS = ("loguniform", "uniform", "randint", "choice", "grid")
CORRECT_FILE = "val_correct.npy"  # 1-D bool: the trial got that validation image right
CONFUSION_FILE = "confusion_matrix.csv"  # rows true, columns predicted (test set)


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
        return self.tags.get("dataset") or self.params.get("dataset") or "unknown"

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


def connect(uri: str) -> MlflowClient:
    """A client for `uri`, after checking that the store or server is there to be read."""
    if is_remote(uri):
        return MlflowClient(require_server(uri))
    if uri.startswith("sqlite:///"):
        # The client would create an empty store for a missing file: reading must not.
        location, question, query = uri[len("sqlite:///"):].partition("?")
        path = Path(urllib.parse.unquote(location))
        if not path.is_file():
            raise UserError(f"--tracking-uri {uri}: no such file {path}; expected the "
                            "mlflow.db of an earlier `medgrid tune` (run from the same directory)")
        # MLflow caches one store per URI string: a relative URI would keep reading the file of
        # the directory it was first opened in, so the client gets the absolute one.
        uri = f"sqlite:///{path.resolve()}{question}{query}"
    # Runs of medgrid 0.1 recorded proxied artifact URIs that a local client cannot open.
    upgrade_proxied_artifacts(uri, Path("mlruns"))
    try:
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)  # opens the store now, not halfway through
    except Exception as exc:  # any failure here means the URI names no readable store
        raise UserError(f"--tracking-uri {uri}: cannot open ({_first_line(exc)}); expected an "
                        "MLflow store or server") from exc
    return client


def find_sweep(client: MlflowClient, experiment: str | None, run_id: str | None) -> SweepInfo:
    """The sweep's parent run: `run_id`, or the latest sweep of `experiment` (default medgrid)."""
    try:
        return _find_sweep(client, experiment, run_id)
    except MlflowException as exc:
        raise UserError(f"MLflow at {client.tracking_uri}: {_first_line(exc)}") from exc


def _find_sweep(client: MlflowClient, experiment: str | None, run_id: str | None) -> SweepInfo:
    if run_id is not None:
        try:
            run = client.get_run(run_id)
        except MlflowException as exc:
            raise UserError(f"--sweep {run_id}: no such run in {client.tracking_uri}; expected "
                            "the run id of a sweep's parent run") from exc
        if run.info.lifecycle_stage != "active":
            raise UserError(f"--sweep {run_id}: run '{run.info.run_name}' is deleted; expected "
                            "an active sweep's parent run")
        exp = client.get_experiment(run.info.experiment_id)
        if experiment is not None and exp.name != experiment:
            raise UserError(f"--sweep {run_id} belongs to experiment '{exp.name}', not "
                            f"'{experiment}'; expected a sweep of the named experiment")
        if run.data.tags.get(tracking.KIND_TAG) != "sweep":
            raise UserError(f"--sweep {run_id}: run '{run.info.run_name}' is not a sweep's "
                            f"parent run (tag {tracking.KIND_TAG} != 'sweep')")
        return _sweep_info(run, exp.name)
    name = experiment or "medgrid"
    exp = client.get_experiment_by_name(name)
    if exp is None or exp.lifecycle_stage != "active":
        known = sorted(e.name for e in client.search_experiments(max_results=20))
        raise UserError(f"--experiment '{name}' not found in {client.tracking_uri}; expected "
                        f"one of {known}")
    runs = client.search_runs([exp.experiment_id], f"tags.`{tracking.KIND_TAG}` = 'sweep'",
                              max_results=1, order_by=["attributes.start_time DESC"])
    if not runs:
        raise UserError(f"experiment '{name}' has no sweep runs (tag {tracking.KIND_TAG} = "
                        "'sweep'); expected runs written by `medgrid tune`")
    return _sweep_info(runs[0], name)


def _sweep_info(run: Any, experiment: str) -> SweepInfo:
    tags = dict(run.data.tags)
    return SweepInfo(run.info.run_id, tags.get(tracking.SWEEP_TAG, run.info.run_name or "?"),
                     experiment, str(run.info.experiment_id), run.info.status,
                     int(run.info.start_time or 0), run.info.artifact_uri or "", tags,
                     dict(run.data.params))


def read_trials(client: MlflowClient, sweep: SweepInfo) -> pd.DataFrame:
    """Every child run of the sweep, one row each, plus a MISSING row per planned trial
    without a run; columns as in `summary.csv`."""
    try:
        runs = tracking.search_all(client, sweep.experiment_id,
                                   f"tags.`{tracking.PARENT_TAG}` = '{sweep.run_id}'")
    except MlflowException as exc:
        raise UserError(f"MLflow at {client.tracking_uri}: {_first_line(exc)}") from exc
    if not runs:
        raise UserError(f"sweep run {sweep.run_id} ('{sweep.name}') has no trial runs; "
                        "expected child runs written by `medgrid tune`")
    rows = [row for run in sorted(runs, key=lambda r: r.info.start_time or 0)
            for row in _study_rows(_trial_row(run), run.data.tags.get(tracking.ALSO_TAG))]
    names = {row["run_name"] for row in rows}
    rows += [_missing_row(config, name) for name, config in planned_trials(sweep).items()
             if name not in names]
    return _tidy(pd.DataFrame(rows))


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


def _trial_row(run: Any) -> dict[str, Any]:
    """One trial's flat record; a run without medgrid's tags and params is an older schema."""
    tags, params, info = run.data.tags, dict(run.data.params), run.info
    where = f"run {info.run_id} ('{info.run_name}')"
    if "study" not in tags:
        raise UserError(f"{where} has no 'study' tag; expected trial runs written by this "
                        "version of `medgrid tune` (older schema?)")
    # `dtype` came later: every run logged before it trained in float32, numpy and torch alike.
    params.setdefault("dtype", "float32")
    absent = [k for k in TrialConfig.model_fields if k not in params]
    if absent:
        raise UserError(f"{where} lacks param '{absent[0]}'; expected every TrialConfig "
                        "field as a param (older schema?)")
    for key in (*INT_PARAMS, *FLOAT_PARAMS):
        try:
            params[key] = int(params[key]) if key in INT_PARAMS else float(params[key])
        except ValueError:
            raise UserError(f"{where}: param {key} = {params[key]!r}; expected a number") from None
    end = info.end_time if info.status != "RUNNING" else None
    return {
        **params, "study": tags["study"], "run_id": info.run_id, "run_name": info.run_name,
        "status": info.status, "diverged": tags.get("diverged") == "true",
        "stopped_early": tags.get("stopped_early") == "true",
        "stopped_epoch": _int_or_nan(tags.get("stopped_epoch")),
        **{k: float(v) for k, v in run.data.metrics.items()},
        "duration_s": (end - info.start_time) / 1000 if end and info.start_time else np.nan,
        "attempt": tags.get("medgrid.attempt", ""), "node": tags.get("node", ""),
        "error": tags.get("medgrid.error", ""),
    }


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
    space = Path(sweep.tags.get("space_file", ""))
    if not sweep.tags.get("space_file") or not space.is_file():
        return {}
    try:
        loaded = load_space(space)
    except UserError:
        return {}
    if loaded.content_sha256 != sweep.tags.get("space_sha256"):
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
    for column in ("attempt", "node", "error"):
        frame[column] = frame[column].fillna("")
    for column in ("diverged", "stopped_early"):
        frame[column] = frame[column].fillna(False).astype(bool)
    frame["stopped_epoch"] = frame["stopped_epoch"].astype("Int64")  # "3", never "3.0"
    return frame.reset_index(drop=True)


def fetch_histories(client: MlflowClient, run_ids: Iterable[str], keys: Iterable[str]
                    ) -> dict[str, pd.DataFrame]:
    """Per-epoch metrics of each run (index: epoch, one column per key), fetched concurrently."""
    run_ids, keys = list(dict.fromkeys(run_ids)), list(keys)

    def one(run_id: str) -> pd.DataFrame:
        columns = {}
        for key in keys:
            points = client.get_metric_history(run_id, key)
            columns[key] = pd.Series({p.step: p.value for p in points}, dtype=float)
        return pd.DataFrame(columns).sort_index()

    try:
        with ThreadPoolExecutor(HISTORY_THREADS) as pool:
            return dict(zip(run_ids, pool.map(one, run_ids), strict=True))
    except MlflowException as exc:
        raise UserError(f"MLflow at {client.tracking_uri}: {_first_line(exc)}") from exc


def add_epoch_times(frame: pd.DataFrame, client: MlflowClient) -> pd.DataFrame:
    """`train_time_s` (sum of `epoch_time_s` over the epochs a run logged) and
    `epoch_time_mean_s` for every trial that has a run."""
    frame = frame.copy()
    at = frame.columns.get_loc("epoch_time_s") + 1
    frame.insert(at, "epoch_time_mean_s", np.nan)
    frame.insert(at, "train_time_s", np.nan)
    chosen = frame["run_id"].astype(bool)
    histories = fetch_histories(client, frame.loc[chosen, "run_id"], ["epoch_time_s"])
    for index in frame.index[chosen]:
        times = histories[frame.at[index, "run_id"]]["epoch_time_s"].dropna()
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


def read_trial_artifacts(client: MlflowClient, run_ids: Iterable[str]) -> TrialArtifacts:
    """`val_correct.npy` and `confusion_matrix.csv` of each run, where logged (older runs and
    diverged trials have no `val_correct.npy`)."""
    run_ids = list(dict.fromkeys(run_ids))
    # MLflow draws a progress bar on stderr for every file it downloads.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
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


def _read_artifacts(client: MlflowClient, run_id: str, directory: Path
                    ) -> tuple[np.ndarray | None, bool | None, str]:
    """(val_correct, constant prediction, error) of one run; None where not logged."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        names = {Path(a.path).name for a in client.list_artifacts(run_id)}
        correct = constant = None
        if CORRECT_FILE in names:
            correct = np.load(client.download_artifacts(run_id, CORRECT_FILE, str(directory)),
                              allow_pickle=False)
            if correct.ndim != 1 or correct.dtype != np.bool_:
                raise ValueError(f"{CORRECT_FILE} is {correct.dtype} of shape {correct.shape}, "
                                 "expected a 1-D bool array")
        if CONFUSION_FILE in names:
            path = client.download_artifacts(run_id, CONFUSION_FILE, str(directory))
            matrix = pd.read_csv(path, index_col=0).to_numpy(dtype=float)
            constant = bool((matrix.sum(axis=0) > 0).sum() == 1)  # one predicted class
        return correct, constant, ""
    except Exception as exc:  # noqa: BLE001 -- an unreadable optional artifact is "not known"
        return None, None, f"run {run_id}: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
