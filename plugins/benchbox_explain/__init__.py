"""Where does it look: Grad-CAM maps of each fold's model, turned on by a suite's [explain] table.

Everything Grad-CAM is here, behind benchbox's hooks; the core names none of it:
- the ``explain`` fold inspector (inspector.py, ``benchbox_fold_inspectors``): checks the [explain] table and,
  at validate, that each backbone can draw maps at the layer named; while a run trains, explains a seeded
  sample of each fold's test images with the fold's own model (``Backbone.explain``, written by the framework
  plugins) and hands the maps to the run store, which writes them to explanations/ beside the fold record;
- the report Section "Where does it look (Grad-CAM heat share)" (``benchbox_report_sections``): per cell and
  true class, the share of the heat in the central (lung) box and in the border frame, beside the cell's
  accuracy and its lungs-blackout probe's, and the Grad-CAM panels (one PNG per cell in the run's plots/,
  which report.html embeds);
- `benchbox explain RUN_DIR` (command.py, ``benchbox_cli_commands``): redraws the panels and the table.
A run without explanations gets nothing from it.
"""

from __future__ import annotations

import os
from pathlib import Path

from benchbox import hookimpl
from benchbox.contracts import Section
from benchbox_explain.inspector import GradCam
from benchbox_explain.maps import FOLDER, stored
from benchbox_explain.views import coarse_notes, draw_panels, share_frame, share_notes

TITLE = "Where does it look (Grad-CAM heat share)"
#: the panels' file prefix in plots/ (plots/gradcam__<cell>.png) and their title in report.html
PLOTS = {"gradcam": "Grad-CAM: where each network looks"}


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
        return Section(TITLE, table, notes=notes + ["No stored maps to summarise."], plots=PLOTS) if notes else None
    return Section(TITLE, table, notes=notes, csv="heat_share.csv", plots=PLOTS)


@hookimpl
def benchbox_fold_inspectors():
    return [GradCam()]


@hookimpl
def benchbox_report_sections(result):
    section = report_section(result)
    return [section] if section is not None else []


@hookimpl
def benchbox_cli_commands(app, groups):
    from benchbox_explain.command import add_command

    add_command(app)
