"""Views of a run, computed from the summary (never stored as truth): the study's Table 2
(accuracies, sensitivity, specificity per network, with our 95% intervals and fold spread),
Table 4 (TP/FP/TN/FN), Tables 3/6 (pooled confusion matrices, predicted as rows, actual as
columns), rendered for the terminal (rich), Markdown, CSV and LaTeX."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table
from tabulate import tabulate

FORMATS = ("terminal", "markdown", "csv", "latex")
METRIC_COLUMNS = [("accuracy_3class", "Acc 3-class %"), ("accuracy_2class", "Acc 2-class %"),
                  ("sensitivity", "Sensitivity %"), ("specificity", "Specificity %")]
NOTE = ("Pooled over the test folds as the study reports them; [95% CI: Wilson for proportions, "
        "patient-level bootstrap for AUC]; ± standard deviation across folds. "
        "vs best: McNemar's test against the best backbone of the data set by 3-class accuracy (* p < 0.05).")


def _nan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _fmt(r, key, scale=100.0, digits=2) -> str:
    value = r.get(key)
    if _nan(value):
        return "n/a"
    text = f"{scale * value:.{digits}f}"
    lo, hi = r.get(f"{key}_ci_low"), r.get(f"{key}_ci_high")
    if not _nan(lo) and not _nan(hi):
        text += f" [{scale * lo:.{max(digits - 1, 0)}f}–{scale * hi:.{max(digits - 1, 0)}f}]"
    std = r.get(f"{key}_fold_std")
    if not _nan(std):
        text += f" ±{scale * std:.{max(digits - 1, 0)}f}"
    return text


def comparison_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """Table 2 of the study, with intervals, AUC, timings and the comparison with the best backbone."""
    rows = []
    for _, r in summary.iterrows():
        r = r.to_dict()
        folds = f"{r['folds']}" if _nan(r.get("folds_expected")) else f"{r['folds']}/{int(r['folds_expected'])}"
        row = {"Dataset": r["dataset"], "Backbone": r["backbone"], "Folds": folds}
        for key, label in METRIC_COLUMNS:
            row[label] = _fmt(r, key)
        if "auc" in r:
            row["AUC"] = _fmt(r, "auc", scale=1.0, digits=3)
        row["vs best"] = r.get("vs_best") if isinstance(r.get("vs_best"), str) else ""
        row["Train s"] = f"{r['train_seconds']:.1f}"
        row["Infer img/s"] = "n/a" if _nan(r["infer_images_per_sec"]) else f"{r['infer_images_per_sec']:.1f}"
        rows.append(row)
    return pd.DataFrame(rows)


def counts_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """Table 4 of the study: TP, FP, TN, FN of the positive class per network."""
    return pd.DataFrame([{"Dataset": r["dataset"], "Backbone": r["backbone"], "Positive": r["positive_class"],
                          "TP": int(r["tp"]), "FP": int(r["fp"]), "TN": int(r["tn"]), "FN": int(r["fn"])}
                         for _, r in summary.iterrows() if "tp" in r and not _nan(r["tp"])])


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


def numeric_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """Every scalar of the summary (for CSV): one row per cell."""
    drop = [c for c in summary.columns if summary[c].map(lambda v: isinstance(v, (list, dict))).any()]
    return summary.drop(columns=drop)


def render_text(summary: pd.DataFrame, fmt: str, title: str = "", problems=(), extra=()) -> str:
    """Markdown, CSV or LaTeX text of Tables 2, 4 and 3/6."""
    if fmt == "csv":
        return numeric_frame(summary).to_csv(index=False)
    tablefmt = {"markdown": "github", "latex": "latex_booktabs"}[fmt]
    heading = (lambda t: f"## {t}\n") if fmt == "markdown" else (lambda t: f"% {t}\n")
    parts = [f"# {title}\n" if fmt == "markdown" else f"% {title}\n"] if title else []
    parts += [heading("Table 2: performance per network"),
              tabulate(comparison_frame(summary), headers="keys", tablefmt=tablefmt, showindex=False),
              "\n" + (NOTE if fmt == "markdown" else f"% {NOTE}") + "\n",
              heading("Table 4: positive-class counts"),
              tabulate(counts_frame(summary), headers="keys", tablefmt=tablefmt, showindex=False) + "\n"]
    for name, cm in confusion_frames(summary):
        parts.append(heading(f"Confusion matrix (Table 3/6 layout): {name}"))
        parts.append(tabulate(cm, headers="keys", tablefmt=tablefmt) + "\n")
    for name, frame in extra:
        parts.append(heading(name))
        parts.append(tabulate(frame, headers="keys", tablefmt=tablefmt, showindex=False) + "\n")
    if problems:
        parts.append(heading("Problems"))
        parts.extend(f"- {p}" if fmt == "markdown" else f"% {p}" for p in problems)
    return "\n".join(parts) + "\n"


def _rich(frame: pd.DataFrame, title: str, caption: str = "") -> Table:
    t = Table(title=title, caption=caption or None)
    for col in frame.columns:
        t.add_column(str(col), justify="left" if col in ("Dataset", "Backbone", "Positive", "") else "right")
    for idx, row in frame.iterrows():
        t.add_row(*[str(v) for v in row])
    return t


def print_terminal(summary: pd.DataFrame, console: Console | None = None, title: str = "", problems=(), extra=()):
    console = console or Console()
    console.print(_rich(comparison_frame(summary), title or "benchbox comparison", NOTE))
    console.print(_rich(counts_frame(summary), "Positive-class counts (Table 4)"))
    for name, cm in confusion_frames(summary):
        console.print(_rich(cm.reset_index(names=""), f"Confusion matrix: {name} (predicted rows, actual columns)"))
    for name, frame in extra:
        console.print(_rich(frame, name))
    for p in problems:
        console.print(f"[yellow]warning:[/] {p}")


def write_views(run_dir, summary: pd.DataFrame, title: str, problems=(), extra=()) -> None:
    """report.md, report.tex, summary.csv and confusion.csv inside the run directory."""
    from benchbox.store import write_atomic

    run_dir = Path(run_dir)
    write_atomic(run_dir / "report.md", render_text(summary, "markdown", title, problems, extra))
    write_atomic(run_dir / "report.tex", render_text(summary, "latex", title, problems, extra))
    write_atomic(run_dir / "summary.csv", render_text(summary, "csv"))
    rows = []
    for name, cm in confusion_frames(summary):
        for pred, row in cm.iterrows():
            for actual, count in row.items():
                rows.append({"cell": name, "predicted": pred.removeprefix("pred "),
                             "actual": actual.removeprefix("actual "), "count": int(count)})
    write_atomic(run_dir / "confusion.csv", pd.DataFrame(rows).to_csv(index=False))
