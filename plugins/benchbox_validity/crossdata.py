"""The cross-dataset matrix of a run with protocol.kind = "cross-dataset", as report tables: one per
backbone, rows trained on, columns tested on, three rows per trained-on data set (AUC, sensitivity,
specificity of its positive class against the rest, with 95% intervals). The diagonal is the
within-data-set cross-validation of the same run. The figures come from RunResult.cross
(benchbox/results/summary.py: cross_dataset_matrix); this module only lays them out."""

from __future__ import annotations

import math

import pandas as pd

from benchbox.contracts import Section

#: (name, label, scale, digits of the value, digits of the interval)
ROWS = (
    ("auc", "AUC", 1, 3, 2),
    ("sensitivity", "Sensitivity %", 100, 1, 1),
    ("specificity", "Specificity %", 100, 1, 1),
)


def _text(row, name: str, scale: float, digits: int, ci_digits: int) -> str:
    v = row.get(name)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    text = f"{scale * v:.{digits}f}"
    lo, hi = row.get(f"{name}_ci_low"), row.get(f"{name}_ci_high")
    if lo is not None and hi is not None and not (math.isnan(lo) or math.isnan(hi)):
        text += f" [{scale * lo:.{ci_digits}f}–{scale * hi:.{ci_digits}f}]"
    return text


def matrix_frame(cross: pd.DataFrame, backbone: str) -> pd.DataFrame:
    """Rows: (trained on, metric); columns: tested on (the diagonal marked "(CV)")."""
    mine = cross[cross["backbone"] == backbone]
    trained = list(dict.fromkeys(mine["trained_on"]))
    tested = list(dict.fromkeys(list(trained) + list(mine["tested_on"])))
    rows = []
    for a in trained:
        for name, label, scale, digits, ci_digits in ROWS:
            row = {"Trained on": a, "Metric": label}
            for b in tested:
                hit = mine[(mine["trained_on"] == a) & (mine["tested_on"] == b)]
                row[b] = _text(hit.iloc[0].to_dict(), name, scale, digits, ci_digits) if len(hit) else ""
            rows.append(row)
    return pd.DataFrame(rows)


def cross_sections(result) -> list[Section]:
    cross = getattr(result, "cross", None)
    if cross is None or not len(cross):
        return []
    out = []
    protocol = result.manifest.get("protocol") or {}
    how = (
        "one model trained on all of the row's data set"
        if protocol.get("refit")
        else f"the mean probability of the row's {protocol.get('k')} fold models (each image counted once)"
    )
    for backbone in dict.fromkeys(cross["backbone"]):
        mine = cross[cross["backbone"] == backbone]
        positives = ", ".join(f"{a}: {p}" for a, p in dict.fromkeys(zip(mine["trained_on"], mine["positive_class"])))
        out.append(
            Section(
                f"Cross-dataset matrix: {backbone} (rows: trained on; columns: tested on)",
                matrix_frame(cross, backbone),
                notes=[
                    "Diagonal: the data set's own cross-validation (test folds pooled); off the diagonal: "
                    f"the whole column data set predicted by {how}.",
                    f"Positive class against the rest, per row's data set ({positives}); classes matched by name. "
                    "95% intervals: AUC patient-level bootstrap, sensitivity and specificity Wilson.",
                ],
                csv=f"cross_dataset__{backbone}.csv",
            )
        )
    out.append(Section("Cross-dataset matrix, long form", cross, csv="cross_dataset.csv", in_report=False))
    return out
