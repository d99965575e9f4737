"""A run's report, rendered from its RunResult: the comparison table (every metric the run's
evaluators declare, with intervals and fold spread, McNemar against the best backbone, the
harness's timings), then the sections plugins add — for the terminal (rich), Markdown, CSV
and LaTeX (the self-contained HTML page is views/html.py). Names are never cut: columns of names do
not wrap, numbers do."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from tabulate import tabulate

from benchbox.execute.environment import busy_start
from benchbox.execute.store import write_atomic
from benchbox.results.summary import RunResult
from benchbox.results.views.format import header, interval_note, md_escape, missing, number, short_fingerprint, value

NAME_COLUMNS = ("Dataset", "Data", "Backbone", "Scheme", "Positive", "")


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
    manifest = getattr(result, "manifest", None) or {}
    parts.append(busy_start(manifest.get("environment") or {}))  # a busy machine's timings: say so
    return " ".join(p for p in parts if p)


def comparison_frame(result: RunResult) -> pd.DataFrame:
    rows = []
    # a run with a frozen scheme (linear-probe, knn) says each entry's scheme beside its backbone
    schemes = "scheme" in result.summary and (result.summary["scheme"].fillna("fine-tune") != "fine-tune").any()
    for _, r in result.summary.iterrows():
        r = r.to_dict()
        expected = r.get("folds_expected")
        folds = f"{r['folds']}" if missing(expected) else f"{r['folds']}/{int(expected)}"
        row = {"Data": r["data"], "Backbone": r["backbone"], **({"Scheme": r["scheme"]} if schemes else {})}
        row["Folds"] = folds
        for spec in result.metrics:
            if spec.table:
                row[header(spec)] = value(r, spec)
        row["vs best"] = r.get("vs_best") if isinstance(r.get("vs_best"), str) else ""
        row["Train s"] = number(r.get("train_seconds"))
        row["Infer img/s"] = number(r.get("infer_images_per_sec"))
        if isinstance(r.get("degenerate"), str):  # a model that predicts one class: said in the table itself
            row["Note"] = f"degenerate: {r['degenerate']}"
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame.fillna({"Note": ""}) if "Note" in frame else frame


def _stored_split(result: RunResult):
    """A data set's split fingerprint computed from the run's stored split, "" where it cannot be read."""
    from benchbox.errors import BenchboxError
    from benchbox.execute.store import RunStore

    def split_of(slug: str) -> str:
        try:
            return RunStore(result.run_dir).split_fingerprint(slug)
        except (BenchboxError, OSError, ValueError):
            return ""

    return split_of


def fingerprints_frame(manifest: dict, split_of=lambda slug: "") -> pd.DataFrame:
    """Which images and which folds each data set had, in short form: two runs whose fingerprints agree saw
    the same images (data) in the same folds (split), so the leaderboard compares them paired. ``split_of``
    computes a data set's split fingerprint from the stored split (runs older than the manifest's field)."""
    rows = []
    for slug, meta in (manifest.get("datasets") or {}).items():
        split = meta.get("split_fingerprint") or (None if meta.get("external_only") else split_of(slug))
        rows.append(
            {
                "Data": slug,
                "Images": meta.get("images", ""),
                "Data fingerprint": short_fingerprint(meta.get("fingerprint")),
                "Split fingerprint": short_fingerprint(split) or "(test only)",
            }
        )
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


def render_markdown(result: RunResult) -> str:
    """Markdown text of the comparison table and every section."""
    return _render_tables(result, md=True)


def render_latex(result: RunResult) -> str:
    """LaTeX (booktabs) text of the comparison table and every section, notes as comments."""
    return _render_tables(result, md=False)


def _render_tables(result: RunResult, md: bool) -> str:
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
        heading("Data and folds"),
        table(fingerprints_frame(result.manifest, _stored_split(result))),
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


def _stack(text: str) -> str:
    """``12.34 [10.1–14.6] ±1.2`` -> value, interval and spread on lines of their own."""
    head, sep, rest = text.partition(" [")
    if sep:
        interval, sep2, spread = f"[{rest}".partition(" ±")
        return "\n".join([head, interval] + ([f"±{spread}"] if sep2 else []))
    head, sep, spread = text.partition(" ±")
    return f"{head}\n±{spread}" if sep else text


def _pieces(line: str) -> list[str]:
    """An interval line ``[10.1–14.6]`` can break after its dash (``[10.1–`` / ``14.6]``), nowhere else."""
    if line.startswith("[") and "–" in line:
        low, _, high = line.partition("–")
        return [f"{low}–", high]
    return [line]


def _break_intervals(text: str, width: int | None) -> str:
    """Intervals longer than the column's width go on two lines, broken after the dash (so rich
    never folds a number); an interval that fits stays whole, with no space inside."""
    if not isinstance(text, str) or width is None:
        return text
    return "\n".join("\n".join(_pieces(line)) if len(line) > width else line for line in text.split("\n"))


# long header words shortened when a table must be drawn compact, explained below the table
ABBREVIATIONS = {
    "Sensitivity": "Sens",
    "Specificity": "Spec",
    "Precision": "Prec",
    "Accuracy": "Acc",
    "Balanced": "Bal",
}


def _abbreviate(frame: pd.DataFrame, names: list[bool]) -> tuple[pd.DataFrame, str]:
    """Headers with their long words abbreviated (names never) and the legend saying so."""
    used: dict[str, str] = {}

    def short(column) -> str:
        words = str(column).split(" ")
        for i, w in enumerate(words):
            if w in ABBREVIATIONS:
                used[ABBREVIATIONS[w]] = w
                words[i] = ABBREVIATIONS[w]
        return " ".join(words)

    frame = frame.rename(columns={c: short(c) for c, n in zip(frame.columns, names) if not n})
    legend = "; ".join(f"{a} = {w}" for a, w in used.items())
    return frame, (f"Headers: {legend}." if legend else "")


# when a table is wider than the terminal: no vertical rules, one space of padding a side shared
# between neighbours (2 characters per column), a blank line between rows
COMPACT = {"box": box.SIMPLE_HEAD, "pad_edge": False, "collapse_padding": True, "show_lines": True}


def _fit(frame: pd.DataFrame, names: list[bool], numeric: list[bool], room: int) -> list[int] | None:
    """Column widths summing to at most ``room`` characters: names whole, every column at least its
    header's longest word (headers break between words), a column of numbers at least its longest
    value and interval half (a value is never folded mid-number), text at least its longest word, the
    rest shared out up to each column's natural width. None when even that does not fit."""
    lines = [[str(c)] + [line for v in frame[c] for line in str(v).split("\n")] for c in frame.columns]
    natural = [max(len(x) for x in col) for col in lines]
    low = []
    for i, c in enumerate(frame.columns):
        head = max([len(w) for w in str(c).split()], default=1)  # a header breaks between words only
        if names[i]:
            low.append(natural[i])
        elif numeric[i]:
            first = [len(str(v).split("\n")[0]) for v in frame[c]]
            rest = [len(p) for v in frame[c] for line in str(v).split("\n")[1:] for p in _pieces(line)]
            low.append(max([head, *first, *rest]))
        else:
            low.append(max([head] + [len(w) for v in frame[c] for w in str(v).split()]))
    if sum(low) > room:
        return None
    # then room for every column's longest word (a whole interval on one line), then more
    words = [max([low[i]] + [len(w) for x in col[1:] for w in x.split()]) for i, col in enumerate(lines)]
    widths = list(low)
    for target in (words, natural):
        while sum(widths) < room:
            grow = [i for i in range(len(widths)) if widths[i] < target[i]]
            if not grow:
                break
            for i in grow[: room - sum(widths)]:
                widths[i] += 1
    return widths


def _table(frame, names, justify, widths, style, title, caption) -> Table:
    t = Table(title=escape(title), caption=escape(caption) if caption else None, caption_justify="left", **style)
    for col, name, just, w in zip(frame.columns, names, justify, widths):
        t.add_column(escape(str(col)), justify=just, no_wrap=name, overflow="fold", width=w)
    for _, row in frame.iterrows():
        t.add_row(*[escape(str(v)) for v in row])
    return t


def _rich(frame: pd.DataFrame, title: str, caption: str = "", width: int | None = None) -> list[Table]:
    """Rich tables whose name columns never wrap or get cut (numbers wrap instead); text is
    shown literally (names such as 'syn [lungs-blackout]' are not markup).

    When the table is wider than ``width`` (e.g. a terminal of 100 columns) it is drawn compact:
    intervals and spreads on lines of their own, no vertical rules, columns sized so that names
    stay whole and no value is folded mid-number. If even that is too wide, the other columns are
    split over several tables, each repeating the name columns (only a single column too wide
    beside the names is folded by rich; names still stay whole)."""
    names = [str(c) in NAME_COLUMNS for c in frame.columns]
    justify = ["right" if not n and _numeric(frame[c]) else "left" for c, n in zip(frame.columns, names)]
    natural = sum(max(len(str(v)) for v in [c, *frame[c]]) for c in frame.columns) + 3 * len(names) + 1
    if width is None or not len(frame) or natural <= width:
        return [_table(frame, names, justify, [None] * len(names), {}, title, caption)]
    frame, legend = _abbreviate(frame, names)
    caption = " ".join(p for p in (caption, legend) if p)
    for col, name in zip(list(frame.columns), names):
        if not name:  # a name such as 'syn [lungs-blackout]' is never split
            frame[col] = frame[col].map(lambda v: _stack(v) if isinstance(v, str) else v)
    numeric = [j == "right" for j in justify]

    def fit(cols: list[int]) -> list[int] | None:
        sub = frame.iloc[:, cols]
        return _fit(sub, [names[i] for i in cols], [numeric[i] for i in cols], width - 2 * len(cols))

    keys = [i for i, n in enumerate(names) if n]
    chunks: list[list[int]] = []
    for i in (i for i, n in enumerate(names) if not n):
        if chunks and fit(sorted(keys + chunks[-1] + [i])) is not None:
            chunks[-1].append(i)
        else:
            chunks.append([i])
    chunks = chunks or [[]]
    tables = []
    for n, chunk in enumerate(chunks):
        cols = sorted(keys + chunk)
        widths = fit(cols) or [None] * len(cols)
        part = frame.iloc[:, cols].copy()
        for col, w in zip(part.columns, widths):
            part[col] = part[col].map(lambda v, w=w: _break_intervals(v, w))
        tables.append(
            _table(
                part,
                [names[i] for i in cols],
                [justify[i] for i in cols],
                widths,
                COMPACT,
                title if n == 0 else f"{title} (continued)",
                caption if n == len(chunks) - 1 else "",
            )
        )
    return tables


def print_terminal(result: RunResult, console: Console | None = None) -> None:
    console = console or Console()
    width = console.width
    for table in _rich(comparison_frame(result), result.title or "benchbox comparison", note(result), width):
        console.print(table)
    for section in result.sections:
        if getattr(section, "in_report", True):
            for table in _rich(section.table, section.title, "\n".join(section.notes), width):
                console.print(table)
    for p in result.problems:
        console.print(f"[yellow]warning:[/] {escape(str(p))}", highlight=False)


def write_views(result: RunResult, registry) -> list[Path]:
    """The run's plots, then one file per output format that declares a ``run_file`` (report.md,
    report.tex, summary.csv, report.html...) and the sections' CSV files, inside the run directory.

    Plots come first (report.html embeds them), so that a plot that cannot be drawn (e.g. a label
    matplotlib cannot parse) is listed among the report's problems instead of stopping the views; a
    format that fails is listed the same way: the records matter more than any view of them."""
    run_dir = Path(result.run_dir)
    written = []
    if importlib.util.find_spec("matplotlib") is not None:
        from benchbox.results.views.plots import write_plots

        try:
            written += write_plots(result)
        except Exception as exc:  # a view: the records and the tables matter more
            result.problems.append(f"plots were not drawn: {type(exc).__name__}: {exc}")
    for section in result.sections:
        csv_name = getattr(section, "csv", None)
        if csv_name:
            write_atomic(run_dir / csv_name, section.table.to_csv(index=False))
            written.append(run_dir / csv_name)
    for name, entry in registry.output_formats.items():
        fmt = entry.obj
        if not fmt.run_file or not fmt.renders_runs or not entry.availability.ok:
            continue
        try:
            write_atomic(run_dir / fmt.run_file, fmt.render_run(result))
        except Exception as exc:  # a view: the records and the other files matter more
            result.problems.append(
                f"{fmt.run_file} was not written (output format {name!r}, {entry.plugin}): {type(exc).__name__}: {exc}"
            )
            continue
        written.append(run_dir / fmt.run_file)
    return written
