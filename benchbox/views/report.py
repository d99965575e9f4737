"""A run's report, rendered from its RunResult: the comparison table (every metric the run's
evaluators declare, with intervals and fold spread, McNemar against the best backbone, the
harness's timings), then the sections plugins add — for the terminal (rich), Markdown, CSV
and LaTeX. Names are never cut: columns of names do not wrap, numbers do."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from tabulate import tabulate

from benchbox.store import write_atomic
from benchbox.summary import RunResult
from benchbox.views.format import header, interval_note, md_escape, missing, number, value

FORMATS = ("terminal", "markdown", "csv", "latex")
NAME_COLUMNS = ("Dataset", "Data", "Backbone", "Positive", "")


def note(result: RunResult) -> str:
    parts = ["Pooled over the test folds", interval_note(result.metrics), "± standard deviation across folds."]
    vs = result.summary["vs_best_metric"].dropna().iloc[0] if "vs_best_metric" in result.summary else None
    if isinstance(vs, str):
        spec = result.metric(vs)
        parts.append(
            f"vs best: McNemar's test against the best backbone of the data set by "
            f"{spec.label if spec else vs} (* p < 0.05)."
        )
    parts.append(
        "Train s: harness wall time of fit, summed over folds; Infer img/s: whole network, one batch after "
        "a warm-up, median over folds."
    )
    return " ".join(p for p in parts if p)


def comparison_frame(result: RunResult) -> pd.DataFrame:
    rows = []
    for _, r in result.summary.iterrows():
        r = r.to_dict()
        expected = r.get("folds_expected")
        folds = f"{r['folds']}" if missing(expected) else f"{r['folds']}/{int(expected)}"
        row = {"Data": r["data"], "Backbone": r["backbone"], "Folds": folds}
        for spec in result.metrics:
            if spec.table:
                row[header(spec)] = value(r, spec)
        row["vs best"] = r.get("vs_best") if isinstance(r.get("vs_best"), str) else ""
        row["Train s"] = number(r.get("train_seconds"))
        row["Infer img/s"] = number(r.get("infer_images_per_sec"))
        rows.append(row)
    return pd.DataFrame(rows)


def numeric_frame(result: RunResult) -> pd.DataFrame:
    """Every scalar of the summary (for CSV): one row per cell."""
    s = result.summary.drop(columns=["cell"])
    drop = [c for c in s.columns if s[c].map(lambda v: isinstance(v, (list, dict, tuple))).any()]
    return s.drop(columns=drop)


def _escape_frame(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out.columns = [md_escape(c) for c in out.columns]
    out.index = [md_escape(i) for i in out.index]
    return out.map(md_escape)


def render_text(result: RunResult, fmt: str) -> str:
    """Markdown, CSV or LaTeX text of the comparison table and every section."""
    if fmt == "csv":
        return numeric_frame(result).to_csv(index=False)
    md = fmt == "markdown"
    tablefmt = "github" if md else "latex_booktabs"

    def heading(text: str, level: int = 2) -> str:
        return f"{'#' * level} {md_escape(text)}\n" if md else f"% {text}\n"

    def table(frame: pd.DataFrame, index: bool = False) -> str:
        frame = _escape_frame(frame) if md else frame
        return tabulate(frame, headers="keys", tablefmt=tablefmt, showindex=index) + "\n"

    parts = [
        heading(result.title, 1),
        heading("Comparison"),
        table(comparison_frame(result)),
        (md_escape(note(result)) if md else f"% {note(result)}") + "\n",
    ]
    for section in result.sections:
        if not getattr(section, "in_report", True):
            continue
        parts.append(heading(section.title))
        parts.append(table(section.table))
        parts.extend((f"- {md_escape(n)}" if md else f"% {n}") for n in section.notes)
        if section.notes:
            parts.append("")
    if result.problems or result.failures:
        parts.append(heading("Problems"))
        lines = list(result.problems) + [f"failed: {f.get('error', '')}" for f in result.failures]
        parts.extend((f"- {md_escape(p)}" if md else f"% {p}") for p in lines)
    return "\n".join(parts) + "\n"


def _numeric(values) -> bool:
    def starts_with_number(v) -> bool:
        head = str(v).split(" ")[0].split("/")[0].replace(",", "")
        try:
            float(head)
            return True
        except ValueError:
            return head in ("n/a", "")

    return all(starts_with_number(v) for v in values)


def _rich(frame: pd.DataFrame, title: str, caption: str = "") -> Table:
    """A rich table whose name columns never wrap or get cut (numbers wrap instead); text is
    shown literally (names such as 'syn [lungs-blackout]' are not markup)."""
    t = Table(title=escape(title), caption=escape(caption) if caption else None, caption_justify="left")
    for col in frame.columns:
        name = str(col) in NAME_COLUMNS
        t.add_column(
            escape(str(col)),
            justify="right" if not name and _numeric(frame[col]) else "left",
            no_wrap=name,
            overflow="fold",
        )
    for _, row in frame.iterrows():
        t.add_row(*[escape(str(v)) for v in row])
    return t


def print_terminal(result: RunResult, console: Console | None = None) -> None:
    console = console or Console()
    console.print(_rich(comparison_frame(result), result.title or "benchbox comparison", note(result)))
    for section in result.sections:
        if getattr(section, "in_report", True):
            console.print(_rich(section.table, section.title, "\n".join(section.notes)))
    for p in result.problems:
        console.print(f"[yellow]warning:[/] {escape(str(p))}", highlight=False)


def write_views(result: RunResult) -> list[Path]:
    """report.md, report.tex, summary.csv, sections' CSV files and plots inside the run directory.

    Plots come first, so that a plot that cannot be drawn (e.g. a label matplotlib cannot parse)
    is listed among the report's problems instead of stopping the views."""
    run_dir = Path(result.run_dir)
    written = []
    if importlib.util.find_spec("matplotlib") is not None:
        from benchbox.views.plots import write_plots

        try:
            written += write_plots(result)
        except Exception as exc:  # a view: the records and the tables matter more
            result.problems.append(f"plots were not drawn: {type(exc).__name__}: {exc}")
    for name, fmt in (("report.md", "markdown"), ("report.tex", "latex"), ("summary.csv", "csv")):
        write_atomic(run_dir / name, render_text(result, fmt))
        written.append(run_dir / name)
    for section in result.sections:
        csv_name = getattr(section, "csv", None)
        if csv_name:
            write_atomic(run_dir / csv_name, section.table.to_csv(index=False))
            written.append(run_dir / csv_name)
    return written
