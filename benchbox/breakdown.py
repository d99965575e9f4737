"""Breakdowns that expose source confounding: metrics per image source within the test folds,
and metrics on external (test-only) data sets that no fold model was trained on."""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchbox.statistics import wilson
from benchbox.summary import group_records


def _rate(hits: int, n: int) -> str:
    if n == 0:
        return "n/a"
    lo, hi = wilson(hits, n)
    return f"{100 * hits / n:.1f} [{100 * lo:.1f}–{100 * hi:.1f}] ({hits}/{n})"


def by_source(records, manifest) -> pd.DataFrame:
    """Per cell and image source: 3-class accuracy, sensitivity, specificity (Wilson 95% CI)."""
    rows = []
    for (ds, bb), recs in group_records(records).items():
        if not all("test_sources" in r for r in recs):
            continue
        dmeta = manifest["datasets"].get(ds, {})
        pos = dmeta.get("classes", []).index(dmeta["positive_class"]) if dmeta.get("positive_class") else 0
        y = np.concatenate([r["y_true"] for r in recs])
        pred = np.concatenate([np.asarray(r["probabilities"]).argmax(1) for r in recs])
        src = np.concatenate([r["test_sources"] for r in recs])
        for s in sorted(set(src)):
            m = src == s
            yt, yp = y[m], pred[m]
            positive, negative = yt == pos, yt != pos
            rows.append({"Dataset": ds, "Backbone": bb, "Source": s, "Images": int(m.sum()),
                         "Acc 3-class %": _rate(int((yt == yp).sum()), int(m.sum())),
                         "Sensitivity %": _rate(int((yp[positive] == pos).sum()), int(positive.sum())),
                         "Specificity %": _rate(int((yp[negative] != pos).sum()), int(negative.sum()))})
    return pd.DataFrame(rows)


def external(records, manifest) -> pd.DataFrame:
    """Per cell, external data set and source: sensitivity and specificity for the positive class
    of the mean prediction of the fold models (each image counted once), and the fold spread."""
    rows = []
    for (ds, bb), recs in group_records(records).items():
        dmeta = manifest["datasets"].get(ds, {})
        classes, positive = dmeta.get("classes", []), dmeta.get("positive_class")
        if positive not in classes:
            continue
        pos = classes.index(positive)
        aliases = sorted({a for r in recs for a in r.get("external", {})})
        for alias in aliases:
            parts = [r["external"][alias] for r in recs if alias in r.get("external", {})]
            labels = np.asarray(parts[0]["labels"])
            sources = np.asarray(parts[0]["sources"])
            fold_pred = [np.asarray(p["probabilities"]).argmax(1) == pos for p in parts]
            mean_pred = np.mean([np.asarray(p["probabilities"]) for p in parts], axis=0).argmax(1) == pos
            for s in sorted(set(sources)):
                m = sources == s
                is_pos = (labels == positive) & m
                is_neg = (labels != positive) & m
                spread = [100 * (fp[is_neg] == 0).mean() for fp in fold_pred] if is_neg.any() else []
                rows.append({"Dataset": ds, "Backbone": bb, "External": alias, "Source": s, "Images": int(m.sum()),
                             "Labels": ", ".join(f"{k} {v}" for k, v in zip(*np.unique(labels[m], return_counts=True))),
                             "Sensitivity %": _rate(int(mean_pred[is_pos].sum()), int(is_pos.sum())),
                             "Specificity %": _rate(int((~mean_pred[is_neg]).sum()), int(is_neg.sum())),
                             "Specificity fold sd": f"{np.std(spread, ddof=1):.1f}" if len(spread) > 1 else "n/a",
                             "Folds": len(parts)})
    return pd.DataFrame(rows)


def sections(records, manifest, summary: pd.DataFrame | None = None) -> list[tuple[str, pd.DataFrame]]:
    """Extra report sections: shortcut reports (with verdicts), per-source and external tables."""
    out = []
    ext = external(records, manifest)
    if summary is not None and manifest.get("probes"):
        from benchbox.shortcuts import shortcut_tables

        for title, table, verdicts in shortcut_tables(summary, manifest, ext):
            out.append((title, table))
            out.append((f"{title}: verdicts", pd.DataFrame([{"Probe": v.probe, "Shortcut?": "YES" if v.fires else "no",
                                                             "Reading": v.text} for v in verdicts])))
    src = by_source(records, manifest)
    if len(src) and src["Source"].nunique() > 1:
        out.append(("Per source (test folds): does the model separate sources rather than diseases?", src))
    if len(ext):
        out.append(("External evaluation (never trained on; mean of the fold models)", ext))
    return out
