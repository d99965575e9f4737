"""Formatting numbers as the evaluators declared them: scale, unit, digits, interval, spread."""

from __future__ import annotations

import html
import math
import re

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


# what markdown would read as HTML: a tag, closing tag, comment, declaration or processing instruction
# (``<`` then a letter, ``/``, ``!`` or ``?``), or a character reference (``&amp;``, ``&#60;``)
_MARKUP = re.compile(r"<[A-Za-z/!?]|&(#[0-9]+|#[xX][0-9A-Fa-f]+|[A-Za-z][A-Za-z0-9]*);")


def md_escape(text) -> str:
    """Text for a markdown table cell or line that reads the same as plain text and rendered.

    Names come from plugins, data sets and suites: text that markdown would read as HTML (``<script>``,
    ``&amp;``) is escaped as HTML entities, so it shows literally when rendered and never injects
    markup. Other text is kept as it is (``p < 0.05``, ``A & B``: a ``<`` before a space or digit, or a
    lone ``&``, is literal text in markdown), so it also reads right as plain text. ``|`` is escaped as
    ``\\|`` (a table cell's separator)."""
    text = str(text)
    if _MARKUP.search(text):
        text = html.escape(text, quote=False)
    return text.replace("|", "\\|")


def short_fingerprint(fingerprint, digits: int = 12) -> str:
    """``sha256:0123abcd...`` -> ``0123abcd...`` (the first ``digits`` characters of the digest); a
    fingerprint that is not a digest (a plugin's own description of its content) by its sha256; "" for none."""
    if not fingerprint:
        return ""
    text = str(fingerprint)
    digest = text.split(":", 1)[-1]
    if not all(c in "0123456789abcdef" for c in digest.lower()) or len(digest) < digits:
        import hashlib

        digest = hashlib.sha256(text.encode()).hexdigest()
    return digest[:digits]
