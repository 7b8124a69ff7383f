"""The report's files: summary.csv, one CSV per table, report.md and a self-contained
report.html (figures embedded as data URIs); `output` decides where they may go.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.report.notes import digits, interval, measured, p_value
from pipeline.report.stats import MCNEMAR, PAIRED_T
from pipeline.report.summary import summary_frame
from pipeline.report.tables import ReportTable

LABELS = {"train/acc": "train acc", "val/acc": "val acc", "test/acc": "test acc",
          "train/loss": "train loss", "train/loss_sum": "train loss (sum)",
          "train_time_s": "time (s)", "run_name": "run"}
SHORT_TESTS = {MCNEMAR: "McNemar", PAIRED_T: "paired t"}
VERDICT_COLUMNS = ("p_vs_winner", "test_vs_winner", "test_detail", "verdict", "eligible",
                   "diverged_trials", "stopped_epoch", "constant_prediction",
                   "constant_predictions", "ref_config")


@dataclass
class ReportDocument:
    """Everything report.md and report.html show, in order."""

    title: str
    facts: list[str]
    warnings: list[str]
    method: list[str]
    tables: list[ReportTable]
    figures: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # key: [(png, caption)]


def write_csvs(trials: pd.DataFrame, tables: list[ReportTable], directory: Path) -> None:
    """summary.csv (one row per trial) and `<table key>.csv` (one row per configuration)."""
    summary_frame(trials).to_csv(directory / "summary.csv", index=False)
    for table in tables:
        _csv_columns(table).to_csv(directory / f"{table.key}.csv", index=False,
                                   float_format="%.10g")


def _csv_columns(table: ReportTable) -> pd.DataFrame:
    """Each metric's columns together (value, std, interval, published, difference), then the
    time ratios, then the test against the winner and the verdict."""
    data = table.data
    per_metric = [c for m in table.metrics for c in
                  (m, f"{m}_std", f"{m}_lo", f"{m}_hi", f"{m}_ref", f"{m}_diff") if c in data]
    ratios = [c for c in data if c.startswith("time_ratio_vs_")]
    tail = [c for c in VERDICT_COLUMNS if c in data]
    head = [c for c in data.columns if c not in (*per_metric, *ratios, *tail)]
    return data[[*head, *per_metric, *ratios, *tail]]


def table_cells(table: ReportTable) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted rows: per metric the measured value (and for val acc its 95%
    interval), the published value and the difference; time as a ratio; p and verdict."""
    headers = [table.config_header, *(LABELS.get(c, c) for c in table.columns), "n", "status"]
    for metric in table.metrics:
        headers += _metric_headers(table, metric)
    headers += ["p vs winner", "verdict"]
    rows = []
    for _, row in table.data.iterrows():
        cells = [str(row["config"]), *(str(row[c]) for c in table.columns), str(row["n"]),
                 str(row["status"])]
        for metric in table.metrics:
            cells += _metric_cells(table, row, metric)
        test = SHORT_TESTS.get(row.get("test_vs_winner", ""))
        cells += [f"{p_value(row['p_vs_winner'])} ({test})" if test else "—",
                  str(row["verdict"])]
        rows.append(cells)
    return headers, rows


def _metric_headers(table: ReportTable, metric: str) -> list[str]:
    label = LABELS.get(metric, metric)
    if metric == "train_time_s":
        base = table.time_ratio.removeprefix("time_ratio_vs_")
        return [label, f"time ÷ batch {base}", "published ÷"] if base else [label]
    published = ["ref", "Δ"] if table.has_reference else []
    return [label, *(["95% CI"] if metric == "val/acc" else []), *published]



def _metric_cells(table: ReportTable, row: pd.Series, metric: str) -> list[str]:
    places = digits(metric)
    if metric == "train_time_s":
        ratio = table.time_ratio
        times = [row.get(ratio), row.get(f"{ratio}_ref")] if ratio else []
        return [measured(row, metric), *(_number(t, ".2f", 2, "x") for t in times)]
    ref, diff = row.get(f"{metric}_ref"), row.get(f"{metric}_diff")
    published = [_number(ref, f".{places}f", places), _number(diff, f"+.{places}f", places)]
    return [measured(row, metric), *([interval(row, metric)] if metric == "val/acc" else []),
            *(published if table.has_reference else [])]


def _number(value: object, spec: str, places: int, unit: str = "") -> str:
    if value is None or pd.isna(value):
        return "—"
    return format(round(float(value), places) + 0.0, spec) + unit  # + 0.0: no "-0.0000"


def render_markdown(doc: ReportDocument) -> str:
    """report.md: readable on GitHub, figures as relative image links."""
    lines = [f"# {doc.title}", "", *(f"- {fact}" for fact in doc.facts), ""]
    lines += [f"> **{w}**\n" for w in doc.warnings]
    lines += ["## How to read the tables", "", *(f"- {m}" for m in doc.method), ""]
    for table in doc.tables:
        lines += [f"## {table.title}" + (f" (study `{table.study}`)" if table.study else ""), ""]
        lines += [f"*{table.caption}*", ""] if table.caption else []
        headers, rows = table_cells(table)
        lines.append(_md_row(headers))
        lines.append(_md_row(["---"] * len(headers)))
        lines += [_md_row([f"**{c}**" if c == "winner" else c for c in r]) for r in rows]
        lines += ["", *(f"- {note}" for note in table.notes), ""]
        for png, caption in doc.figures.get(table.key, []):
            lines += [f"![{Path(png).stem}]({png})", "", f"*{caption}*", ""]
    return "\n".join(lines)


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def render_html(doc: ReportDocument, directory: Path) -> str:
    """report.html: one file, figures embedded, nothing fetched from the network."""
    esc = html.escape
    body = [f"<h1>{esc(doc.title)}</h1>", _html_list(doc.facts)]
    body += [f'<p class="warning">{_inline(w)}</p>' for w in doc.warnings]
    body += ["<h2>How to read the tables</h2>", _html_list(doc.method)]
    for table in doc.tables:
        study = f" (study <code>{esc(table.study)}</code>)" if table.study else ""
        body.append(f"<h2>{esc(table.title)}{study}</h2>")
        if table.caption:
            body.append(f'<p class="caption">{_inline(table.caption)}</p>')
        headers, rows = table_cells(table)
        head = "".join(f"<th>{esc(h)}</th>" for h in headers)
        cells = ["".join(f'<td class="{esc(c)}">{esc(c)}</td>' if c == "winner" else
                         f"<td>{esc(c)}</td>" for c in row) for row in rows]
        body.append(f"<table><thead><tr>{head}</tr></thead><tbody>"
                    + "".join(f"<tr>{c}</tr>" for c in cells) + "</tbody></table>")
        body.append(_html_list(table.notes))
        for png, caption in doc.figures.get(table.key, []):
            data = base64.b64encode((directory / png).read_bytes()).decode("ascii")
            body.append(f'<figure><img alt="{esc(caption)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{esc(caption)}</figcaption></figure>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{esc(doc.title)}</title><style>{_CSS}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")


def _html_list(items: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>"


def _inline(text: str) -> str:
    """Escaped text with Markdown's `code` spans as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


_CSS = """
body { font-family: sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.winner { font-weight: bold; background: #e6f4e6; }
.warning { background: #fff3cd; border: 1px solid #e0c36c; padding: 0.6em; }
img { max-width: 100%; }
figcaption, .caption { font-style: italic; font-size: 0.9em; }
"""
