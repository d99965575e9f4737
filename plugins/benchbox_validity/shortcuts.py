"""The shortcut report: per backbone, accuracy, sensitivity and specificity under the standard
protocol and under each probe of the suite, with intervals, and a plain-language verdict per probe
(thresholds documented in docs/validity.md and configurable in a suite's [probes.thresholds])."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from benchbox.data.probes import PROBES, THRESHOLDS
from benchbox.execute.records import CellKey, DataKey
from benchbox_validity.breakdown import ExternalResult
from benchbox_validity.rates import Rates, cell_rates


@dataclass
class Verdict:
    probe: str
    fires: bool
    text: str


def chance_level(meta: dict) -> float:
    """Accuracy of always predicting the largest class."""
    counts = meta.get("class_counts", {})
    return max(counts.values()) / sum(counts.values()) if counts else float("nan")


def sources_coincide(meta: dict) -> bool:
    """Every class of the data set comes from one source (e.g. all positives from one collection)."""
    per_class = meta.get("class_sources", {})
    return bool(per_class) and all(len(sources) == 1 for sources in per_class.values())


def verdict(
    probe: str,
    standard: Rates,
    probed: Rates,
    chance: float,
    thresholds: dict,
    source_coincides: bool | None = None,
    options: dict | None = None,
) -> Verdict:
    """A plain-language reading of one probe against the standard protocol."""
    options = options or {}
    same, above = thresholds["same_within_points"], thresholds["above_chance_points"]
    acc, base = probed.accuracy.points, standard.accuracy.points
    chance_pts = 100 * chance
    if probe == "source-as-label":
        src_acc = probed.accuracy.value
        if src_acc >= thresholds["source_accuracy"] and source_coincides:
            return Verdict(
                probe,
                True,
                f"the image source is predicted with {100 * src_acc:.1f}% accuracy and the "
                "classes coincide with the sources: the headline cannot separate disease from source",
            )
        if src_acc >= thresholds["source_accuracy"]:
            return Verdict(
                probe,
                True,
                f"the image source is predicted with {100 * src_acc:.1f}% accuracy: the "
                "model can tell the sources apart, a shortcut wherever classes and sources are linked",
            )
        return Verdict(
            probe,
            False,
            f"the source is predicted with {100 * src_acc:.1f}% accuracy (below "
            f"{100 * thresholds['source_accuracy']:.0f}%): no near-perfect source signal",
        )
    if probe in ("lungs-blackout", "border-only"):
        what = (
            "with the lungs blacked out"
            if probe == "lungs-blackout"
            else f"from a {100 * options.get('frame', 0.12):.0f}% border alone"
        )
        if acc >= base - same and acc >= chance_pts + above:
            return Verdict(
                probe,
                True,
                f"accuracy {what} is {acc:.1f}%, within {base - acc:.1f} points of the "
                f"standard protocol ({base:.1f}%): the model does not need the lungs",
            )
        if acc >= chance_pts + above:
            return Verdict(
                probe,
                True,
                f"accuracy {what} is {acc:.1f}% (chance {chance_pts:.1f}%, standard "
                f"{base:.1f}%): information outside the lungs predicts the class",
            )
        return Verdict(
            probe,
            False,
            f"accuracy {what} is {acc:.1f}%, near chance ({chance_pts:.1f}%): no "
            "shortcut found outside the lungs by this probe",
        )
    if probe == "centre-only":
        if acc >= base - same:
            return Verdict(
                probe,
                False,
                f"accuracy on the centre alone is {acc:.1f}%, within {base - acc:.1f} "
                f"points of the standard ({base:.1f}%): the centre carries the signal",
            )
        return Verdict(
            probe,
            True,
            f"accuracy on the centre alone is {acc:.1f}%, {base - acc:.1f} points "
            f"below the standard ({base:.1f}%): the border carries part of the signal",
        )
    raise ValueError(probe)


def _row(protocol: str, data: str, r: Rates) -> dict:
    return {
        "Protocol": protocol,
        "Data": data,
        "Accuracy %": r.accuracy.text(),
        "Sensitivity %": r.sensitivity.text(),
        "Specificity %": r.specificity.text(),
    }


def within_verdict(std: Rates, row: Rates, thresholds: dict, name: str) -> Verdict:
    drop = max(std.sensitivity.points - row.sensitivity.points, std.specificity.points - row.specificity.points)
    if drop != drop:  # nan
        return Verdict("within-source", False, f"within {name}: sensitivity or specificity undefined")
    if drop > thresholds["same_within_points"]:
        return Verdict(
            "within-source",
            True,
            f"inside one source ({name}) sensitivity is {row.sensitivity.text()}% "
            f"and specificity {row.specificity.text()}%, up to {drop:.1f} points below the headline: much "
            "of the headline came from telling sources apart",
        )
    return Verdict(
        "within-source",
        False,
        f"inside one source ({name}) sensitivity and specificity stay within "
        f"{thresholds['same_within_points']:.0f} points of the headline",
    )


def external_verdict(std: Rates, e: ExternalResult, thresholds: dict, positive: str) -> Verdict:
    if not e.specificity.n:
        return Verdict(
            "external-source", False, f"{e.external} ({e.source}): no negative images to measure specificity"
        )
    if e.specificity.points < std.specificity.points - thresholds["same_within_points"]:
        return Verdict(
            "external-source",
            True,
            f"on unseen images from {e.source} ({e.external}) specificity falls to "
            f"{e.specificity.text()}% from {std.specificity.points:.1f}%: the model calls images of the "
            f"{positive} class's source {positive} whatever they show",
        )
    return Verdict(
        "external-source",
        False,
        f"on unseen images from {e.source} ({e.external}) specificity is "
        f"{e.specificity.text()}%, close to the standard protocol",
    )


def shortcut_reports(result, externals: list[ExternalResult]) -> list[tuple[CellKey, pd.DataFrame, list[Verdict]]]:
    """[(standard cell, table, verdicts)] — one per standard cell of a run that has probes."""
    manifest = result.manifest
    probes = manifest.get("probes") or {}
    if not probes:
        return []
    thresholds = {**THRESHOLDS, **(manifest.get("probe_thresholds") or {})}
    cells = result.cells
    within = probes.get("within-source", {}).get("dataset")
    out = []
    for cell, recs in cells.items():
        if cell.probe or cell.dataset == within:
            continue
        meta = result.data_meta(cell)
        positive = meta.get("positive_class") or recs[0].classes[0]
        std = cell_rates(recs, positive)
        table, verdicts = [_row("standard", cell.dataset, std)], []
        for probe in [p for p in PROBES if p in probes]:
            probed_cell = CellKey(cell.dataset, cell.backbone, probe)
            if probed_cell not in cells:
                continue
            pmeta = result.data_meta(probed_cell)
            probed = cell_rates(cells[probed_cell], pmeta.get("positive_class") or positive)
            label = probe + (" (test only)" if probes[probe].get("apply") == "test" else "")
            data = cell.dataset if probe != "source-as-label" else f"{cell.dataset}, label = source"
            table.append(_row(label, data, probed))
            verdicts.append(
                verdict(
                    probe,
                    std,
                    probed,
                    chance_level(pmeta),
                    thresholds,
                    source_coincides=sources_coincide(meta),
                    options=probes[probe],
                )
            )
        within_cell = CellKey(within, cell.backbone) if within else None
        if within_cell in cells:
            wmeta = result.data_meta(within_cell)
            row = cell_rates(cells[within_cell], wmeta.get("positive_class") or positive)
            table.append(_row("within-source", within, row))
            verdicts.append(within_verdict(std, row, thresholds, within))
        ext_name = probes.get("external-source", {}).get("dataset")
        for e in externals:
            if e.cell == cell and e.external == ext_name:
                table.append(
                    {
                        "Protocol": f"external-source ({e.source})",
                        "Data": ext_name,
                        "Accuracy %": "n/a",
                        "Sensitivity %": e.sensitivity.text(),
                        "Specificity %": e.specificity.text(),
                    }
                )
                verdicts.append(external_verdict(std, e, thresholds, positive))
        out.append((cell, pd.DataFrame(table), verdicts))
    return out


__all__ = ["Verdict", "verdict", "shortcut_reports", "DataKey"]
