"""Validity sections for every run's report, computed from the fold records alone:

- the shortcut report of a suite with [probes]: each probe beside the standard protocol, with a
  verdict per probe (also shown beside the entry in leaderboards);
- per-source rates in the test folds (when a data set mixes sources): does the model separate
  sources rather than diseases?
- external evaluation: test-only data sets no fold model trained on;
- the cross-dataset matrix of a protocol.kind = "cross-dataset" run (train on A, test on B), per backbone.
"""

from __future__ import annotations

import pandas as pd

from benchbox import hookimpl
from benchbox.contracts import Section
from benchbox_validity.breakdown import by_source, external, external_frame
from benchbox_validity.crossdata import cross_sections
from benchbox_validity.shortcuts import shortcut_reports


def sections(result) -> list[Section]:
    out = []
    externals = external(result)
    for cell, table, verdicts in shortcut_reports(result, externals):
        title = f"Shortcut report: {cell}"
        out.append(Section(title, table))
        out.append(
            Section(
                f"{title}: verdicts",
                pd.DataFrame(
                    [{"Probe": v.probe, "Shortcut?": "YES" if v.fires else "no", "Reading": v.text} for v in verdicts]
                ),
                annotations={
                    cell: " | ".join(f"{v.probe}: {'SHORTCUT' if v.fires else 'ok'} — {v.text}" for v in verdicts)
                },
            )
        )
    src = by_source(result)
    if len(src) and src["Source"].nunique() > 1:
        out.append(Section("Per source (test folds): does the model separate sources rather than diseases?", src))
    crossed = cross_sections(result)
    out += crossed
    if externals and not crossed:  # a cross-dataset run's external predictions are its matrix
        out.append(
            Section("External evaluation (never trained on; mean of the fold models)", external_frame(externals))
        )
    return out


@hookimpl
def benchbox_report_sections(result):
    return sections(result)
