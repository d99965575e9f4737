"""The shortcut report: per backbone, the headline metrics under the standard protocol and under
each probe of the suite, with intervals and a plain-language verdict per probe."""

from __future__ import annotations

import math

import pandas as pd

from benchbox.probes import PROBES, THRESHOLDS, verdict


def _pct(row, key) -> str:
    v = row.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    lo, hi = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
    ci = "" if lo is None or pd.isna(lo) else f" [{100 * lo:.1f}–{100 * hi:.1f}]"
    return f"{100 * v:.1f}{ci}"


def chance_level(manifest, dataset) -> float:
    """Accuracy of always predicting the largest class."""
    counts = manifest["datasets"].get(dataset, {}).get("class_counts", {})
    return max(counts.values()) / sum(counts.values()) if counts else float("nan")


def sources_coincide(manifest, dataset) -> bool:
    """Every class of the data set comes from one source (e.g. all COVID from Cohen, the rest from Kermany)."""
    per_class = manifest["datasets"].get(dataset, {}).get("class_sources", {})
    return bool(per_class) and all(len(sources) == 1 for sources in per_class.values())


def shortcut_tables(summary: pd.DataFrame, manifest: dict, external: pd.DataFrame | None = None):
    """[(title, table, verdicts)] — one per standard dataset x backbone cell that has probes."""
    probes = manifest.get("probes") or {}
    if not probes:
        return []
    thresholds = {**THRESHOLDS, **(manifest.get("probe_thresholds") or {})}
    rows = {(r["dataset"], r["backbone"]): r.to_dict() for _, r in summary.iterrows()}
    within = probes.get("within-source", {}).get("dataset")
    out = []
    for (ds, bb), std in rows.items():
        if "@" in ds or ds == within:
            continue
        table = [{"Protocol": "standard", "Data": ds, "Acc 3-class %": _pct(std, "accuracy_3class"),
                  "Acc 2-class %": _pct(std, "accuracy_2class"), "Sensitivity %": _pct(std, "sensitivity"),
                  "Specificity %": _pct(std, "specificity")}]
        verdicts = []
        for probe in [p for p in PROBES if p in probes]:
            row = rows.get((f"{ds}@{probe}", bb))
            if row is None:
                continue
            label = probe + (" (test only)" if probes[probe].get("apply") == "test" else "")
            table.append({"Protocol": label, "Data": ds if probe != "source-as-label" else f"{ds}, label = source",
                          "Acc 3-class %": _pct(row, "accuracy_3class"), "Acc 2-class %": _pct(row, "accuracy_2class"),
                          "Sensitivity %": _pct(row, "sensitivity"), "Specificity %": _pct(row, "specificity")})
            chance = chance_level(manifest, f"{ds}@{probe}")
            v = verdict(probe, std, row, chance, thresholds, source_coincides=sources_coincide(manifest, ds),
                        options=probes[probe])
            verdicts.append(v)
        if within and (within, bb) in rows:
            row = rows[(within, bb)]
            table.append({"Protocol": "within-source", "Data": within, "Acc 3-class %": _pct(row, "accuracy_3class"),
                          "Acc 2-class %": _pct(row, "accuracy_2class"), "Sensitivity %": _pct(row, "sensitivity"),
                          "Specificity %": _pct(row, "specificity")})
            verdicts.append(_within_verdict(std, row, thresholds, within))
        ext_name = probes.get("external-source", {}).get("dataset")
        if ext_name and external is not None and len(external):
            sub = external[(external["Dataset"] == ds) & (external["Backbone"] == bb) & (external["External"] == ext_name)]
            for _, e in sub.iterrows():
                table.append({"Protocol": f"external-source ({e['Source']})", "Data": ext_name, "Acc 3-class %": "n/a",
                              "Acc 2-class %": "n/a", "Sensitivity %": e["Sensitivity %"], "Specificity %": e["Specificity %"]})
                verdicts.append(_external_verdict(std, e, thresholds, ext_name))
        out.append((f"Shortcut report: {ds} x {bb}", pd.DataFrame(table), verdicts))
    return out


def _within_verdict(std, row, thresholds, name):
    from benchbox.probes import Verdict

    drop = max(100 * (std.get("sensitivity", 0) - row.get("sensitivity", 0)),
               100 * (std.get("specificity", 0) - row.get("specificity", 0)))
    if math.isnan(drop):
        return Verdict("within-source", False, f"within {name}: sensitivity or specificity undefined")
    if drop > thresholds["same_within_points"]:
        return Verdict("within-source", True, f"inside one source ({name}) sensitivity is {_pct(row, 'sensitivity')}% and "
                       f"specificity {_pct(row, 'specificity')}%, up to {drop:.1f} points below the headline: much of the "
                       "headline came from telling sources apart")
    return Verdict("within-source", False, f"inside one source ({name}) sensitivity and specificity stay within "
                   f"{thresholds['same_within_points']:.0f} points of the headline")


def _external_verdict(std, e, thresholds, name):
    from benchbox.probes import Verdict

    spec = e["Specificity %"]
    if spec == "n/a":
        return Verdict("external-source", False, f"{name} ({e['Source']}): no negative images to measure specificity")
    value = float(spec.split()[0])
    if value < 100 * std.get("specificity", 0) - thresholds["same_within_points"]:
        return Verdict("external-source", True, f"on unseen images from {e['Source']} ({name}) specificity falls to "
                       f"{spec}% from {100 * std['specificity']:.1f}%: the model calls non-COVID images of the "
                       "COVID source COVID")
    return Verdict("external-source", False, f"on unseen images from {e['Source']} ({name}) specificity is {spec}%, "
                   "close to the standard protocol")


def shortcut_text(tables, fmt: str = "markdown") -> str:
    from tabulate import tabulate

    parts = []
    for title, table, verdicts in tables:
        parts.append(f"## {title}\n")
        parts.append(tabulate(table, headers="keys", tablefmt="github", showindex=False) + "\n")
        parts.extend(f"- **{v.probe}**{' ⚠' if v.fires else ''}: {v.text}" for v in verdicts)
        parts.append("")
    return "\n".join(parts)
