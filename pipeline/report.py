"""`medgrid report`: from a sweep tracked in MLflow to the report directory, step by step.

read the reference -> find the sweep -> read its trials -> tables -> histories for the figures
-> write everything into a staging directory -> log it to the sweep's parent run -> rename.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline import __version__
from pipeline.errors import UserError
from pipeline.report_output import check_out_dir, staged_directory
from pipeline.report_plots import CURVE_KEYS, plot_study, plot_train_time
from pipeline.report_reference import DEFAULT_REFERENCE, load_reference
from pipeline.report_render import (
    ReportDocument,
    render_html,
    render_markdown,
    write_csvs,
)
from pipeline.report_runs import (
    SweepInfo,
    add_train_time,
    connect,
    fetch_histories,
    find_sweep,
    read_trials,
)
from pipeline.report_stats import OUTCOMES, outcome
from pipeline.report_tables import ReportTable, build_tables, label_configs, time_studies

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
MAX_CURVE_SEEDS = 5  # per configuration: the figures need a few histories, not every run's


@dataclass(frozen=True)
class ReportOptions:
    """What `medgrid report` was asked to do."""

    experiment: str | None = None
    tracking_uri: str = DEFAULT_TRACKING_URI
    sweep: str | None = None
    out: Path = Path("report_out")
    reference: Path | None = None  # None: the repository's reference/hw1.csv, if present
    log_to_mlflow: bool = True


@dataclass(frozen=True)
class ReportResult:
    """Where the report went and what it covered."""

    out: Path
    sweep: SweepInfo
    trials: pd.DataFrame
    logged: bool

    def summary(self) -> str:
        """One line for the terminal."""
        counts = self.trials.apply(outcome, axis=1).value_counts()
        states = ", ".join(f"{counts[o]} {o}" for o in OUTCOMES if o in counts)
        logged = f"; logged to run {self.sweep.run_id} (artifacts/report)" if self.logged else ""
        return (f"report of sweep '{self.sweep.name}' ({len(self.trials)} trials: {states}) "
                f"written to {self.out}{logged}")


def make_report(options: ReportOptions) -> ReportResult:
    """Write the report of one sweep into `options.out`; nothing is left half-written."""
    check_out_dir(options.out)  # before reading anything: a bad --out fails in a second
    reference_path = options.reference or (DEFAULT_REFERENCE if DEFAULT_REFERENCE.is_file()
                                           else None)
    reference = load_reference(reference_path) if reference_path else None
    client = connect(options.tracking_uri)
    sweep = find_sweep(client, options.experiment, options.sweep)
    trials = read_trials(client, sweep)
    trials.insert(1, "config", label_configs(trials))
    trials = add_train_time(trials, client, time_studies(trials))
    sizes = {"n_val": sweep.count("n_val"), "n_test": sweep.count("n_test")}
    tables = build_tables(trials, reference, sizes)
    curves = study_curves(client, trials)
    with staged_directory(options.out) as stage:
        write_csvs(trials, tables, stage)
        figures = write_figures(tables, curves, stage)
        doc = describe(sweep, trials, tables, figures, options, reference_path)
        (stage / "report.md").write_text(render_markdown(doc), encoding="utf-8")
        (stage / "report.html").write_text(render_html(doc, stage), encoding="utf-8")
        if options.log_to_mlflow:
            log_report(client, sweep, stage)
    return ReportResult(options.out.resolve(), sweep, trials, options.log_to_mlflow)


def study_curves(client: MlflowClient, trials: pd.DataFrame
                 ) -> dict[str, dict[str, list[pd.DataFrame]]]:
    """Per study and configuration, the histories of its first few finished seeds."""
    done = trials[trials["status"] == "FINISHED"].sort_values("seed", kind="stable")
    picked = done.groupby(["study", "config"], sort=False).head(MAX_CURVE_SEEDS)
    histories = fetch_histories(client, picked["run_id"], CURVE_KEYS)
    curves: dict[str, dict[str, list[pd.DataFrame]]] = {}
    for study, rows in trials.groupby("study", sort=False):
        chosen = picked[picked["study"] == study]
        curves[str(study)] = {str(c): [histories[r] for r in chosen.loc[chosen["config"] == c,
                                                                      "run_id"]]
                              for c in rows["config"].unique()}
    return curves


def write_figures(tables: list[ReportTable], curves: dict[str, dict[str, list[pd.DataFrame]]],
                  directory: Path) -> dict[str, list[tuple[str, str]]]:
    """The PNGs of each study's table, as {table key: [(file name, caption)]}."""
    figures: dict[str, list[tuple[str, str]]] = {}
    for table in tables:
        if table.study is None or not any(curves[table.study].values()):
            continue  # the model comparison, or a study without a finished trial
        name = f"fig_{table.study}.png"
        plot_study(curves[table.study], f"{table.title}: per epoch", directory / name)
        entries = [(name, f"Study {table.study}: validation accuracy and losses per epoch for "
                    f"every configuration (mean over up to {MAX_CURVE_SEEDS} finished seeds; "
                    "band: ± std).")]
        if "train_time_s" in table.metrics and table.data["train_time_s"].notna().any():
            name = f"fig_{table.study}_time.png"
            plot_train_time(table.data, f"Study {table.study}: training time", directory / name)
            entries.append((name, f"Study {table.study}: training time (sum of epoch times) per "
                            "configuration; the published times come from another machine."))
        figures[table.key] = entries
    return figures


def describe(sweep: SweepInfo, trials: pd.DataFrame, tables: list[ReportTable],
             figures: dict[str, list[tuple[str, str]]], options: ReportOptions,
             reference: Path | None) -> ReportDocument:
    """The report's header facts, warnings and reading guide."""
    tags, params = sweep.tags, sweep.params
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(sweep.start_time / 1000))
    counts = trials.apply(outcome, axis=1).value_counts()
    facts = [
        f"Sweep `{sweep.name}`: parent run `{sweep.run_id}` ({sweep.status}), experiment "
        f"`{sweep.experiment}`, started {started}; tracking `{options.tracking_uri}`.",
        f"Data: `{sweep.dataset}` (md5 {tags.get('dataset_md5', '?')}); "
        f"{params.get('n_train', '?')} train / {params.get('n_val', '?')} validation / "
        f"{params.get('n_test', '?')} test images (test split `{tags.get('test_split', '?')}`).",
        f"Trials: {len(trials)} ({', '.join(f'{counts[o]} {o}' for o in OUTCOMES if o in counts)})"
        f"; space file `{tags.get('space_file', '?')}`, git commit "
        f"`{tags.get('git_commit', '?')[:12]}`.",
        f"Published numbers: {reference if reference else 'none (no reference file)'}.",
        f"Written by medgrid {__version__} on {time.strftime('%Y-%m-%d %H:%M')}.",
    ]
    return ReportDocument(f"medgrid report: sweep {sweep.name}", facts,
                          warnings(sweep, trials), METHOD, tables, figures)


METHOD = [
    "One row per configuration (a study's trials that share every param but the seed); with "
    "several seeds a cell is mean ± std over the n finished trials.",
    "The winner is the configuration with the highest mean validation accuracy, never test "
    "accuracy; a configuration with a diverged trial cannot win.",
    "95% interval of an accuracy: the spread over seeds (t-interval) combined with the sampling "
    "error of an accuracy on the validation set's N images (binomial); configurations whose "
    "interval overlaps the winner's are marked 'within noise'.",
    "ref: the published value for the same configuration (the homework's OCTMNIST runs, one seed "
    "each); Δ = measured − published.",
    "Failed, killed, running and missing trials are counted under status and listed below each "
    "table; they never enter a mean. summary.csv has one row per trial.",
    "Training time is the sum of the epochs' epoch_time_s; published times come from the "
    "authors' machine, so only ratios between rows compare.",
]


def warnings(sweep: SweepInfo, trials: pd.DataFrame) -> list[str]:
    """What makes measured and published numbers unlike, said before any table."""
    notes = []
    if sweep.dataset != "octmnist":
        notes.append(f"These runs used the '{sweep.dataset}' data set, not OCTMNIST. The ref "
                     "columns are the homework's published OCTMNIST numbers, shown for "
                     "orientation only: the differences say nothing about the models on "
                     "OCTMNIST.")
    shortened = {k: v for k, v in sweep.params.items() if k.startswith("override.")}
    if shortened:
        what = ", ".join(f"{k.removeprefix('override.')}={v}" for k, v in sorted(shortened.items()))
        notes.append(f"These runs were shortened ({what}); the published numbers come from "
                     "full-length runs on the full training set.")
    if sweep.tags.get("test_split") == "full":
        notes.append(f"Test accuracies here use the full {sweep.params.get('n_test', '?')}-image "
                     "test split; the published ones use the homework's 529-image subset.")
    planned, found = sweep.count("n_trials"), int((trials["status"] != "MISSING").sum())
    if planned is not None and planned > found and not (trials["status"] == "MISSING").any():
        notes.append(f"The sweep planned {planned} trials but only {found} have a run; the "
                     "space file is gone or changed, so which ones are missing is unknown.")
    return notes


def log_report(client: MlflowClient, sweep: SweepInfo, directory: Path) -> None:
    """Upload the report as artifacts (under `report/`) of the sweep's parent run."""
    from pipeline.sweep import open_tracking

    uri = client.tracking_uri
    try:
        if sweep.artifact_uri.startswith("mlflow-artifacts:") and not uri.startswith("http"):
            # Artifacts of runs created through a server live behind that server's proxy:
            # serve the local store the way `medgrid tune` did.
            with tempfile.TemporaryDirectory(prefix="medgrid-report-") as logs, \
                    open_tracking(uri, Path("mlruns"), Path(logs)) as url:
                MlflowClient(url).log_artifacts(sweep.run_id, str(directory), "report")
        else:
            client.log_artifacts(sweep.run_id, str(directory), "report")
    except (MlflowException, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"could not log the report to run {sweep.run_id} ({reason}); expected "
                        "a writable artifact store (or pass --no-log)") from exc
