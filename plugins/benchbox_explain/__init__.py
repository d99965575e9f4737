"""Where does it look: the Grad-CAM report of a run made with [explain].

Adds the report Section "Where does it look (Grad-CAM heat share)" — per cell and true class,
the share of the heat in the central (lung) box and in the border frame, beside the cell's
accuracy and its lungs-blackout probe's — and draws the Grad-CAM panels (one PNG per cell in
the run's plots/, which report.html embeds). The maps themselves are computed while each fold
runs (benchbox/execute/harness.py, the engines' gradcam.py) and stored in explanations/; this plugin
only reads them. A run without explanations gets nothing from it.
"""

from __future__ import annotations

import os
from pathlib import Path

from benchbox import hookimpl
from benchbox.contracts import Section
from benchbox.results.explain import FOLDER, coarse_notes, draw_panels, share_frame, share_notes, stored

TITLE = "Where does it look (Grad-CAM heat share)"


def _settings(result) -> dict:
    suite = (result.manifest or {}).get("suite_as_run") or {}
    table = suite.get("explain") if isinstance(suite, dict) else None
    return table if isinstance(table, dict) else {}


def _statuses(result) -> list[str]:
    """One line per cell whose folds made no maps, saying why (from the fold records)."""
    out = {}
    for r in result.records:
        status = (r.info or {}).get("explain", {}).get("status") if isinstance(r.info, dict) else None
        if status and status != "ok":
            out.setdefault(str(r.cell), status)
    return [f"{cell}: no Grad-CAM maps: {status}" for cell, status in out.items()]


def _panels_current(run_dir: Path, explained: list[dict]) -> bool:
    plots = run_dir / "plots"
    newest = max((os.path.getmtime(d["path"]) for d in explained), default=0)
    for d in explained:
        p = plots / f"gradcam__{d['cell'].slug}.png"
        if not p.exists() or p.stat().st_mtime < newest:
            return False
    return True


def report_section(result) -> Section | None:
    run_dir = Path(result.run_dir)
    if not (run_dir / FOLDER).is_dir():
        return None
    cells = {c.slug: c for c in result.cells}
    explained = [d for d in stored(run_dir, cells) if d["fold"] in {r.fold for r in result.cells[d["cell"]]}]
    settings = _settings(result)
    centre, frame = float(settings.get("centre", 0.6)), float(settings.get("frame", 0.1))
    notes = share_notes(centre, frame) + coarse_notes(explained) + _statuses(result)
    if explained and not _panels_current(run_dir, explained):
        try:  # the panels are views of the stored maps: drawn once, embedded by report.html
            draw_panels(explained, run_dir / "plots", int(settings.get("images_per_class", 4)))
        except Exception as exc:  # a view must not stop the report
            notes.append(f"Grad-CAM panels were not drawn: {type(exc).__name__}: {exc}")
    table = share_frame(explained, result.cells, centre, frame)
    if not len(table):
        return Section(TITLE, table, notes=notes + ["No stored maps to summarise."]) if notes else None
    return Section(TITLE, table, notes=notes, csv="heat_share.csv")


@hookimpl
def benchbox_report_sections(result):
    section = report_section(result)
    return [section] if section is not None else []
