"""Formatting numbers as the evaluators declared them: scale, unit, digits, interval, spread."""

from __future__ import annotations

import html
import math

from benchbox.contracts import MetricSpec


def missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or not isinstance(value, (int, float))


def header(spec: MetricSpec) -> str:
    return f"{spec.label} {spec.unit}".strip()


def value(row: dict, spec: MetricSpec, interval: bool = True, spread: bool = True) -> str:
    """``12.34 [10.1–14.6] ±1.2`` for a metric of a summary row; ``n/a`` when it is undefined."""
    v = row.get(spec.name)
    if missing(v):
        return "n/a"
    d = spec.digits
    text = f"{spec.scale * v:.{d}f}"
    lo, hi = row.get(f"{spec.name}_ci_low"), row.get(f"{spec.name}_ci_high")
    if interval and not missing(lo) and not missing(hi):
        text += f" [{spec.scale * lo:.{max(d - 1, 0)}f}–{spec.scale * hi:.{max(d - 1, 0)}f}]"
    std = row.get(f"{spec.name}_fold_std")
    if spread and not missing(std):
        text += f" ±{spec.scale * std:.{max(d - 1, 0)}f}"
    return text


def number(v, digits: int = 1) -> str:
    return "n/a" if missing(v) else f"{v:,.{digits}f}"


def interval_note(metrics: list[MetricSpec]) -> str:
    """One sentence saying how each interval shown was made."""
    kinds = {"wilson": "Wilson score", "bootstrap": "patient-level bootstrap"}
    parts = []
    for kind, words in kinds.items():
        names = [m.label for m in metrics if m.table and m.interval == kind]
        if names:
            parts.append(f"{words} for {', '.join(names)}")
    return f"[95% CI: {'; '.join(parts)}]" if parts else ""


def md_escape(text) -> str:
    """Names come from plugins, data sets and suites: never let them inject HTML into markdown."""
    return html.escape(str(text), quote=False).replace("|", "\\|")
