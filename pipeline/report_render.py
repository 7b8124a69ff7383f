"""The report's files: summary.csv, one CSV per table, report.md and a self-contained
report.html (figures embedded as data URIs); `report_output` decides where they may go.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.report_tables import ReportTable, measured

LABELS = {"train/acc": "train acc", "val/acc": "val acc", "test/acc": "test acc",
          "train/loss": "train loss", "train_time_s": "time (s)"}


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
    trials.to_csv(directory / "summary.csv", index=False)
    for table in tables:
        _csv_columns(table).to_csv(directory / f"{table.key}.csv", index=False,
                                   float_format="%.6g")


def _csv_columns(table: ReportTable) -> pd.DataFrame:
    """Each metric's columns together (value, std, interval, published, difference)."""
    data = table.data
    per_metric = [c for m in table.metrics for c in
                  (m, f"{m}_std", f"{m}_ci95", f"{m}_ref", f"{m}_diff") if c in data]
    tail = [c for c in ("verdict", "eligible", "ref_config") if c in data]
    head = [c for c in data.columns if c not in (*per_metric, *tail)]
    return data[[*head, *per_metric, *tail]]


def table_cells(table: ReportTable) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted rows: measured value, published value and difference per metric."""
    extra = ["setting"] if "setting" in table.data else []
    headers = [table.config_header, *extra, "n", "status"]
    for metric in table.metrics:
        headers += [LABELS.get(metric, metric), "ref", "Δ"]
    headers.append("verdict")
    rows = []
    for _, row in table.data.iterrows():
        cells = [str(row["config"]), *(str(row[c]) for c in extra), str(row["n"]),
                 str(row["status"])]
        for metric in table.metrics:
            digits = 1 if metric == "train_time_s" else 4
            ref, diff = row.get(f"{metric}_ref"), row.get(f"{metric}_diff")
            cells += [measured(row, metric), _number(ref, f".{digits}f", digits),
                      _number(diff, f"+.{digits}f", digits)]
        cells.append(str(row["verdict"]))
        rows.append(cells)
    return headers, rows


def _number(value: object, spec: str, digits: int) -> str:
    if value is None or pd.isna(value):
        return "—"
    return format(round(float(value), digits) + 0.0, spec)  # + 0.0: no "-0.0000"


def render_markdown(doc: ReportDocument) -> str:
    """report.md: readable on GitHub, figures as relative image links."""
    lines = [f"# {doc.title}", "", *(f"- {fact}" for fact in doc.facts), ""]
    lines += [f"> **{w}**\n" for w in doc.warnings]
    lines += ["## How to read the tables", "", *(f"- {m}" for m in doc.method), ""]
    for table in doc.tables:
        lines += [f"## {table.title}" + (f" (study `{table.study}`)" if table.study else ""), ""]
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
figcaption { font-style: italic; font-size: 0.9em; }
"""
