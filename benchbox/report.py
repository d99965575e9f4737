"""Views of a run: the comparison table and the pooled confusion matrices, rendered for the
terminal (rich), Markdown, CSV and LaTeX. Computed from the summary, never stored as truth."""

from __future__ import annotations

import math

import pandas as pd
from rich.console import Console
from rich.table import Table
from tabulate import tabulate

FORMATS = ("terminal", "markdown", "csv", "latex")
METRIC_COLUMNS = [("accuracy_3class", "Acc 3-class %"), ("accuracy_2class", "Acc 2-class %"),
                  ("sensitivity", "Sensitivity %"), ("specificity", "Specificity %")]


def _pct(value, std=None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{100 * value:.2f}"
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        text += f" ± {100 * std:.2f}"
    return text


def comparison_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: the study's four metrics (pooled ± fold std), counts, time, throughput."""
    rows = []
    for _, r in summary.iterrows():
        folds = f"{r['folds']}" if pd.isna(r.get("folds_expected")) else f"{r['folds']}/{int(r['folds_expected'])}"
        row = {"Dataset": r["dataset"], "Backbone": r["backbone"], "Framework": r.get("framework", ""),
               "Folds": folds}
        for key, label in METRIC_COLUMNS:
            row[label] = _pct(r.get(key), r.get(f"{key}_fold_std"))
        for key in ("tp", "fp", "tn", "fn"):
            row[key.upper()] = int(r[key]) if key in r and not pd.isna(r[key]) else None
        row["Train s"] = f"{r['train_seconds']:.1f}"
        row["Infer img/s"] = "n/a" if pd.isna(r["infer_images_per_sec"]) else f"{r['infer_images_per_sec']:.1f}"
        rows.append(row)
    return pd.DataFrame(rows)


def confusion_frames(summary: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Pooled confusion matrices as the study prints them: predicted labels as rows, actual as columns."""
    out = []
    for _, r in summary.iterrows():
        if not isinstance(r.get("confusion"), list):
            continue
        classes = list(r["classes"])
        cm = pd.DataFrame(r["confusion"], index=classes, columns=classes).T  # rows: predicted
        cm.index = [f"pred {c}" for c in classes]
        cm.columns = [f"actual {c}" for c in classes]
        out.append((f"{r['dataset']} x {r['backbone']}", cm))
    return out


def render_text(summary: pd.DataFrame, fmt: str, title: str = "", problems=()) -> str:
    """Markdown, CSV or LaTeX text of the comparison table and the confusion matrices."""
    table = comparison_frame(summary)
    if fmt == "csv":
        return table.to_csv(index=False)
    tablefmt = {"markdown": "github", "latex": "latex_booktabs"}[fmt]
    parts = []
    if title:
        parts.append(f"# {title}\n" if fmt == "markdown" else f"% {title}\n")
    parts.append(tabulate(table, headers="keys", tablefmt=tablefmt, showindex=False))
    note = ("Pooled over test folds (± fold standard deviation). Positive class: "
            + ", ".join(sorted(set(summary["positive_class"]))) + ".")
    parts.append("\n" + (note if fmt == "markdown" else f"% {note}") + "\n")
    for name, cm in confusion_frames(summary):
        parts.append(("## Confusion matrix: " if fmt == "markdown" else "% Confusion matrix: ") + name + "\n")
        parts.append(tabulate(cm, headers="keys", tablefmt=tablefmt) + "\n")
    if problems:
        parts.append("## Problems\n" if fmt == "markdown" else "% Problems\n")
        parts.extend(f"- {p}" if fmt == "markdown" else f"% {p}" for p in problems)
    return "\n".join(parts) + "\n"


def print_terminal(summary: pd.DataFrame, console: Console | None = None, title: str = "", problems=()):
    console = console or Console()
    table = comparison_frame(summary).drop(columns=["Framework", "TP", "FP", "TN", "FN"])
    rt = Table(title=title or "benchbox comparison", caption="pooled over test folds, ± fold std")
    for col in table.columns:
        rt.add_column(col, justify="left" if col in ("Dataset", "Backbone", "Framework") else "right")
    for _, row in table.iterrows():
        rt.add_row(*["" if v is None else str(v) for v in row])
    console.print(rt)
    for name, cm in confusion_frames(summary):
        ct = Table(title=f"Confusion matrix: {name}")
        ct.add_column("")
        for col in cm.columns:
            ct.add_column(col, justify="right")
        for idx, row in cm.iterrows():
            ct.add_row(idx, *[str(v) for v in row])
        console.print(ct)
    for p in problems:
        console.print(f"[yellow]warning:[/] {p}")


def write_views(run_dir, summary: pd.DataFrame, title: str, problems=()) -> None:
    """report.md, summary.csv and confusion.csv inside the run directory."""
    from pathlib import Path
    from benchbox.store import write_atomic

    run_dir = Path(run_dir)
    write_atomic(run_dir / "report.md", render_text(summary, "markdown", title, problems))
    write_atomic(run_dir / "summary.csv", render_text(summary, "csv"))
    rows = []
    for name, cm in confusion_frames(summary):
        for pred, row in cm.iterrows():
            for actual, count in row.items():
                rows.append({"cell": name, "predicted": pred.removeprefix("pred "),
                             "actual": actual.removeprefix("actual "), "count": int(count)})
    write_atomic(run_dir / "confusion.csv", pd.DataFrame(rows).to_csv(index=False))
