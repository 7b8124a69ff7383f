"""`medgrid report`: from a sweep tracked in MLflow to the report directory, step by step.

read the reference -> find the sweep -> read its trials (tags, epoch times, artifacts) -> tables
(seeds pooled, paired tests against each winner; a top-k table for a sampled study) -> histories
for the figures -> write everything into a staging directory -> log it to the sweep's parent run
-> rename.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline import __version__
from pipeline.errors import UserError
from pipeline.report.output import check_out_dir, staged_directory
from pipeline.report.plots import CURVE_KEYS, plot_study, plot_train_time
from pipeline.report.reference import DEFAULT_REFERENCE, load_reference
from pipeline.report.render import (
    ReportDocument,
    render_html,
    render_markdown,
    write_csvs,
)
from pipeline.report.runs import (
    SweepInfo,
    TrialArtifacts,
    add_epoch_times,
    config_defaults,
    fetch_histories,
    find_sweep,
    one_row_per_run,
    read_trial_artifacts,
    read_trials,
)
from pipeline.report.sampled import sampled_figure, sampled_labels, sampled_table
from pipeline.report.stats import ALPHA, OUTCOMES, outcome
from pipeline.report.summary import add_artifact_flags, blank_diverged
from pipeline.report.tables import ReportTable, build_tables, label_configs, number_tables
from pipeline.tracking.client import TrackingClient, first_line, open_store
from pipeline.tracking.names import DEFAULT_TRACKING_URI
from pipeline.tracking.records import TrackingError

MAX_CURVE_SEEDS = 5  # per configuration: the figures need a few histories, not every run's


@dataclass(frozen=True)
class ReportOptions:
    """What `medgrid report` was asked to do."""

    experiment: str | None = None
    tracking_uri: str = DEFAULT_TRACKING_URI
    sweep: str | None = None
    out: Path = Path("report_out")
    reference: Path | None = None  # None: the repository's reference/hw1.csv, if present
    log_to_run: bool = True  # the report as artifacts of the sweep's parent run


@dataclass(frozen=True)
class ReportResult:
    """Where the report went and what it covered."""

    out: Path
    sweep: SweepInfo
    trials: pd.DataFrame
    logged: bool

    def summary(self) -> str:
        """One line for the terminal."""
        runs = one_row_per_run(self.trials)
        counts = runs.apply(outcome, axis=1).value_counts()
        states = ", ".join(f"{counts[o]} {o}" for o in OUTCOMES if o in counts)
        logged = f"; logged to run {self.sweep.run_id} (artifacts/report)" if self.logged else ""
        return (f"report of sweep '{self.sweep.name}' ({len(runs)} trials: {states}) "
                f"written to {self.out}{logged}")


def make_report(options: ReportOptions) -> ReportResult:
    """Write the report of one sweep into `options.out`; nothing is left half-written."""
    check_out_dir(options.out)  # before reading anything: a bad --out fails in a second
    reference_path = options.reference or (DEFAULT_REFERENCE if DEFAULT_REFERENCE.is_file()
                                           else None)
    reference = load_reference(reference_path) if reference_path else None
    client = open_store(options.tracking_uri)
    sweep = find_sweep(client, options.experiment, options.sweep)
    trials, artifacts = read_sweep(client, sweep)
    sizes = {k: sweep.count(k) for k in ("n_train", "n_val", "n_test")}
    sampled = sweep.sampled
    grid = trials[~trials["study"].isin(sampled_studies(trials, sampled))]
    tables = build_tables(grid, reference, sizes, artifacts.correct)
    tables += [sampled_table(trials, s, sampled, sizes, artifacts.correct)
               for s in sampled_studies(trials, sampled)]
    tables = number_tables(tables)
    curves = study_curves(client, grid)
    with staged_directory(options.out) as stage:
        write_csvs(trials, tables, stage)
        figures = write_figures(tables, curves, trials, sampled, stage)
        doc = describe(sweep, trials, artifacts, tables, figures, options, reference_path)
        (stage / "report.md").write_text(render_markdown(doc), encoding="utf-8")
        (stage / "report.html").write_text(render_html(doc, stage), encoding="utf-8")
        if options.log_to_run:
            log_report(client, sweep, stage)
    return ReportResult(options.out.resolve(), sweep, trials, options.log_to_run)


def read_sweep(client: TrackingClient, sweep: SweepInfo) -> tuple[pd.DataFrame, TrialArtifacts]:
    """The sweep's trials, labelled by configuration, with epoch times and what their
    artifacts say; a diverged trial's accuracies blanked (they are not results)."""
    trials = read_trials(client, sweep)
    trials.insert(1, "config", label_configs(trials))
    sampled = sampled_studies(trials, sweep.sampled)
    if sampled:
        rows = trials["study"].isin(sampled)
        trials.loc[rows, "config"] = sampled_labels(trials[rows], sweep.sampled)
    trials = add_epoch_times(trials, client)
    done = trials.loc[trials["status"] == "FINISHED", "run_id"].unique()
    artifacts = read_trial_artifacts(client, done)
    trials = add_artifact_flags(blank_diverged(trials), artifacts)
    return trials, artifacts


def sampled_studies(trials: pd.DataFrame, sampled: dict[str, str]) -> list[str]:
    """The studies a sampled sweep sampled: all of them (a sampled sweep has one study)."""
    return [str(s) for s in trials["study"].unique()] if sampled else []


def study_curves(client: TrackingClient, trials: pd.DataFrame
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
                  trials: pd.DataFrame, sampled: dict[str, str], directory: Path
                  ) -> dict[str, list[tuple[str, str]]]:
    """The PNGs of each study's table, numbered Figure 1, 2, ... in the report's order, as
    {table key: [(file name, caption)]}."""
    figures: dict[str, list[tuple[str, str]]] = {}
    for table in tables:
        if table.study is None:
            continue  # the model comparison has no figure of its own
        number = sum(len(f) for f in figures.values()) + 1
        if table.study in curves and any(curves[table.study].values()):
            entries = [_curves_figure(table, _legend(table, curves[table.study]), number,
                                      directory)]
            if table.time_ratio and table.data["train_time_s"].notna().any():
                entries.append(_time_figure(table, number + 1, directory))
        elif table.study not in curves:
            name = f"fig_{table.study}_sampled.png"
            heading = f"Figure {number}: study {table.study}, validation accuracy by sampled value"
            text = sampled_figure(trials, table, sampled, heading, directory / name)
            entries = [(name, f"Figure {number}: study {table.study}, {text}")]
        else:
            continue  # a study without a finished trial
        figures[table.key] = entries
    return figures


def _legend(table: ReportTable, curves: dict[str, list[pd.DataFrame]]
            ) -> dict[str, list[pd.DataFrame]]:
    """Curves keyed by legend label: a diverged or early-stopped configuration says so."""
    verdicts = dict(zip(table.data["config"].astype(str), table.data["verdict"], strict=True))
    return {(f"{label} ({verdicts[label]})" if verdicts.get(label, "").startswith(
        ("diverged", "stopped")) else label): histories for label, histories in curves.items()}


def _curves_figure(table: ReportTable, curves: dict[str, list[pd.DataFrame]], number: int,
                   directory: Path) -> tuple[str, str]:
    name = f"fig_{table.study}.png"
    plot_study(curves, f"Figure {number}: study {table.study}, per epoch", directory / name)
    counts = [len(h) for h in curves.values() if h]
    low, high = min(counts), max(counts)
    seeds = f"{low}" if low == high else f"{low}–{high}"
    band = "; band: ± std over the seeds" if high > 1 else ""
    return name, (f"Figure {number}: study {table.study}, validation accuracy and losses per "
                  f"epoch for every configuration in Table {table.number}; line: mean over "
                  f"n = {seeds} "
                  f"seed{'s' * (high > 1)} per configuration (its finished runs, early-stopped "
                  f"and diverged ones included, at most {MAX_CURVE_SEEDS}){band}.")


def _time_figure(table: ReportTable, number: int, directory: Path) -> tuple[str, str]:
    name = f"fig_{table.study}_time.png"
    base = table.time_ratio.removeprefix("time_ratio_vs_")
    plot_train_time(table.data, table.time_ratio,
                    f"Figure {number}: study {table.study}, training time", directory / name)
    return name, (f"Figure {number}: study {table.study}, training time (sum of the epochs' "
                  f"times) per configuration, in seconds on this machine and as a ratio to "
                  f"batch {base}'s, beside the published ratio (the published seconds come "
                  "from the authors' machine and are not compared).")


def describe(sweep: SweepInfo, trials: pd.DataFrame, artifacts: TrialArtifacts,
             tables: list[ReportTable], figures: dict[str, list[tuple[str, str]]],
             options: ReportOptions, reference: Path | None) -> ReportDocument:
    """The report's header facts, warnings and reading guide."""
    tags, params = sweep.tags, sweep.params
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(sweep.start_time / 1000))
    runs = one_row_per_run(trials)
    counts = runs.apply(outcome, axis=1).value_counts()
    ran = int(runs.apply(outcome, axis=1).isin(["finished", "stopped"]).sum())
    facts = [
        f"Sweep `{sweep.name}`: parent run `{sweep.run_id}` ({sweep.status}), experiment "
        f"`{sweep.experiment}`, started {started}; tracking `{options.tracking_uri}`.",
        f"Data: `{sweep.dataset}` (md5 {tags.get('dataset_md5', '?')}); "
        f"{params.get('n_train', '?')} train / {params.get('n_val', '?')} validation / "
        f"{params.get('n_test', '?')} test images (test split `{tags.get('test_split', '?')}`); "
        "the winner is chosen on the validation split only.",
        f"Seeds per study: {seeds_per_study(trials)}.",
        f"Trials: {len(runs)} ({', '.join(f'{counts[o]} {o}' for o in OUTCOMES if o in counts)})"
        f"; space file `{tags.get('space_file', '?')}`, git commit "
        f"`{tags.get('git_commit', '?')[:12]}`.",
        f"Paired tests: `val_correct.npy` found for {len(artifacts.correct)} of the {ran} "
        "trials that finished or were stopped early (diverged trials and runs of an older "
        "medgrid have none).",
        f"Published numbers: {reference if reference else 'none (no reference file)'}.",
        f"Written by medgrid {__version__} on {time.strftime('%Y-%m-%d %H:%M')}.",
    ]
    if sweep.sampled:
        facts.insert(3, "Sampled search: " + ", ".join(f"{k} ({v})" for k, v in
                                                       sweep.sampled.items()) + ".")
    return ReportDocument(f"medgrid report: sweep {sweep.name}", facts,
                          warnings(sweep, trials, artifacts,
                                   any(t.has_reference for t in tables)), METHOD, tables, figures)


def seeds_per_study(trials: pd.DataFrame) -> str:
    """'q1_logreg 1 (seed 1); q2_lr 3 (seeds 1, 2, 3)': the seeds each study ran."""
    parts = []
    for study, rows in trials.groupby("study", sort=False):
        seeds = sorted({int(s) for s in rows["seed"].dropna()})
        listed = ", ".join(map(str, seeds[:8])) + (", ..." if len(seeds) > 8 else "")
        parts.append(f"{study} {len(seeds)} (seed{'s' * (len(seeds) > 1)} {listed})")
    return "; ".join(parts)


METHOD = [
    "One row per configuration (a study's trials that share every param but the seed); n is the "
    "number of seeds behind a row's cells (its finished trials, or where none finished its "
    "early-stopped ones); with several seeds a cell is mean ± std.",
    "The winner is the configuration with the highest mean validation accuracy, never test "
    "accuracy; a configuration with a diverged or early-stopped trial cannot win.",
    "95% CI of val acc: with one seed, the Wilson score interval of an accuracy on the "
    "validation images (each table's caption gives their number); with several seeds, mean ± "
    "t-interval over the seeds, widened to the Wilson interval of the mean where that is wider "
    "(seeds that agree exactly have no spread, yet were scored on a finite set of images).",
    f"p vs winner: with one seed per configuration, the exact McNemar test on the shared "
    f"validation images (two-sided binomial test on the b + c images exactly one of the two got "
    f"right; p = 1 when b + c = 0); with several seeds, a paired t-test of validation accuracy "
    f"over the seeds both ran (two-sided; not available with fewer than 2 common seeds). "
    f"'within noise': the test does not reject at α = {ALPHA}; 'below': it rejects; "
    "'noise unknown': no test was possible (e.g. no val_correct.npy in older runs). The winner "
    "is picked on the same validation images and the p-values are not corrected for the number "
    "of rows, so 'below' is a little too easy to reach.",
    "A diverged trial's accuracies are shown as 'diverged' (NaN in the CSVs): its weights became "
    "NaN. An early-stopped trial (stopped by the scheduler) shows its values at the epoch it "
    "stopped. 'constant prediction': the trial predicted one class for every test image.",
    "ref: the published value for the same configuration (the homework's OCTMNIST runs, one seed "
    "each); Δ = measured − published.",
    "Failed, killed, running and missing trials are counted under status and listed below each "
    "table; they never enter a mean. summary.csv has one row per trial; a param that does not "
    "apply to a model is empty there.",
    "Training time is the sum of the epochs' epoch_time_s; the published times come from the "
    "authors' machine, so only ratios between rows are set beside them.",
]


def warnings(sweep: SweepInfo, trials: pd.DataFrame, artifacts: TrialArtifacts,
             has_reference: bool) -> list[str]:
    """What makes measured and published numbers unlike, said before any table."""
    notes = []
    if sweep.dataset != "octmnist":
        notes.append(f"These runs used the '{sweep.dataset}' data set, not OCTMNIST: their "
                     "numbers say nothing about the models on OCTMNIST" + (
                         ". The ref columns are the homework's published OCTMNIST numbers, "
                         "shown for orientation only." if has_reference else "."))
    shortened = {k: v for k, v in sweep.params.items() if k.startswith("override.")}
    if shortened:
        what = ", ".join(f"{k.removeprefix('override.')}={v}" for k, v in sorted(shortened.items()))
        notes.append(f"These runs were shortened ({what}); the published numbers come from "
                     "full-length runs on the full training set.")
    if sweep.tags.get("test_split") == "full":
        notes.append(f"Test accuracies here use the full {sweep.params.get('n_test', '?')}-image "
                     "test split; the published ones use the homework's 529-image subset.")
    found = int((one_row_per_run(trials)["status"] != "MISSING").sum())
    planned = sweep.count("n_trials")
    if planned is not None and planned > found and not (trials["status"] == "MISSING").any():
        notes.append(f"The sweep planned {planned} trials but only {found} have a run; the "
                     "space file is gone or changed, so which ones are missing is unknown.")
    assumed = _assumed_params(one_row_per_run(trials))
    if assumed:
        notes.append("Some runs were logged before a config field existed and are read with its "
                     f"current default ({assumed}; `assumed` in summary.csv names them per run).")
    if artifacts.unreadable:
        notes.append(f"The artifacts of {len(artifacts.unreadable)} trials could not be read "
                     f"({artifacts.reason}); their paired tests say 'noise unknown'.")
    return notes


def _assumed_params(runs: pd.DataFrame) -> str:
    """'optimizer = sgd in 2 runs; ...': params filled with their defaults, and how often."""
    if "assumed" not in runs:
        return ""
    counts = runs["assumed"].fillna("").str.split(";").explode().value_counts()
    defaults = config_defaults()
    return "; ".join(f"{key} = {defaults[key]} in {n} run{'s' * (n > 1)}"
                     for key, n in counts.items() if key)


def log_report(client: TrackingClient, sweep: SweepInfo, directory: Path) -> None:
    """Upload the report as artifacts (under `report/`) of the sweep's parent run.

    A local store's runs record plain file URIs (stores of medgrid 0.1 are upgraded when
    opened, see `tracking.store`), so no server is needed here.
    """
    try:
        client.upload_artifacts(sweep.run_id, directory, "report")
    except (TrackingError, OSError) as exc:
        reason = first_line(exc)
        raise UserError(f"could not log the report to run {sweep.run_id} ({reason}); expected "
                        "a writable artifact store (or pass --no-log)") from exc
