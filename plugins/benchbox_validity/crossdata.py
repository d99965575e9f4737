"""The cross-dataset matrix of a run whose split strategy crosses data sets, as report tables: one per
backbone, rows trained on, columns tested on, one row per trained-on data set and metric (for
cross-dataset: AUC, sensitivity and specificity of its positive class against the rest, with 95%
intervals). The diagonal is the within-data-set cross-validation of the same run. The figures come
from RunResult.cross, computed by the evaluators the strategy names (benchbox/results/matrix.py);
this module only lays them out."""

from __future__ import annotations

import math

import pandas as pd

from benchbox.contracts import MetricSpec, Section
from benchbox.results.views.format import header

#: how each interval was made, as the notes say it
INTERVALS = {"bootstrap": "patient-level bootstrap", "wilson": "Wilson"}


def _text(row, spec: MetricSpec) -> str:
    """A value and its interval, as compact as the grid needs: a percentage one decimal shorter than the
    comparison table's (its interval too), any other figure at its declared digits (interval one fewer)."""
    v = row.get(spec.name)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    digits = max(spec.digits - 1, 0) if spec.unit == "%" else spec.digits
    ci_digits = max(spec.digits - 1, 0)
    text = f"{spec.scale * v:.{digits}f}"
    lo, hi = row.get(f"{spec.name}_ci_low"), row.get(f"{spec.name}_ci_high")
    if lo is not None and hi is not None and not (math.isnan(lo) or math.isnan(hi)):
        text += f" [{spec.scale * lo:.{ci_digits}f}–{spec.scale * hi:.{ci_digits}f}]"
    return text


def matrix_frame(cross: pd.DataFrame, backbone: str, metrics: list[MetricSpec]) -> pd.DataFrame:
    """Rows: (trained on, metric); columns: tested on."""
    mine = cross[cross["backbone"] == backbone]
    trained = list(dict.fromkeys(mine["trained_on"]))
    tested = list(dict.fromkeys(list(trained) + list(mine["tested_on"])))
    rows = []
    for a in trained:
        for spec in metrics:
            row = {"Trained on": a, "Metric": header(spec)}
            for b in tested:
                hit = mine[(mine["trained_on"] == a) & (mine["tested_on"] == b)]
                row[b] = _text(hit.iloc[0].to_dict(), spec) if len(hit) else ""
            rows.append(row)
    return pd.DataFrame(rows)


def _noun(label: str) -> str:
    """A metric's label inside a sentence: "Sensitivity" -> "sensitivity", "AUC" stays."""
    return label if label.isupper() else label.lower()


def _listed(words: list[str]) -> str:
    return ", ".join(words[:-1]) + (" and " if len(words) > 1 else "") + words[-1]


def sources_notes(result) -> list[str]:
    """How the matrix's intervals were made, and which evaluators the suite does not list computed it."""
    metrics = result.cross_metrics
    kinds = {}
    for spec in metrics:
        kinds.setdefault(INTERVALS.get(spec.interval, ""), []).append(_noun(spec.label))
    said = [f"{_listed(names)} {how}" for how, names in kinds.items() if how]
    out = [f"95% intervals: {', '.join(said)}."] if said else []
    listed = result.manifest.get("evaluators", [])
    added = {}
    for spec in metrics:
        name = result.cross_evaluators.get(spec.name)
        if name and name not in listed:
            added.setdefault(name, []).append(_noun(spec.label))
    out += [
        f"{_listed(names)}: computed by evaluator {name!r}, which the suite does not list "
        "(the split strategy asks it for the matrix)."
        for name, names in added.items()
    ]
    return out


def cross_sections(result) -> list[Section]:
    cross = getattr(result, "cross", None)
    if cross is None or not len(cross) or not getattr(result, "cross_metrics", None):
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
                matrix_frame(cross, backbone, result.cross_metrics),
                notes=[
                    "Diagonal: the data set's own cross-validation (test folds pooled); off the diagonal: "
                    f"the whole column data set predicted by {how}.",
                    " ".join(
                        [f"Positive class against the rest, per row's data set ({positives}); classes matched by name."]
                        + sources_notes(result)
                    ),
                ],
                csv=f"cross_dataset__{backbone}.csv",
            )
        )
    out.append(Section("Cross-dataset matrix, long form", cross, csv="cross_dataset.csv", in_report=False))
    return out
