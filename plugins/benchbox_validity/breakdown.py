"""Breakdowns that expose source confounding: rates per image source within the test folds,
and rates on external (test-only) data sets that no fold model was trained on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from benchbox.execute.records import CellKey
from benchbox_validity.rates import Rate, rates


def by_source(result) -> pd.DataFrame:
    """Per cell and image source: accuracy, sensitivity, specificity (Wilson 95% CI)."""
    rows = []
    for cell, recs in result.cells.items():
        meta = result.data_meta(cell)
        classes = list(recs[0].classes)
        pos = classes.index(meta["positive_class"]) if meta.get("positive_class") in classes else 0
        y = np.concatenate([r.y_true for r in recs])
        pred = np.concatenate([r.predicted for r in recs])
        src = np.concatenate([np.asarray(r.test_sources) for r in recs])
        for s in sorted(set(src)):
            m = src == s
            rt = rates(y[m], pred[m], pos)
            rows.append(
                {
                    "Data": cell.label,
                    "Backbone": cell.backbone,
                    "Source": s,
                    "Images": int(m.sum()),
                    "Accuracy %": rt.accuracy.text(True),
                    "Sensitivity %": rt.sensitivity.text(True),
                    "Specificity %": rt.specificity.text(True),
                }
            )
    return pd.DataFrame(rows)


@dataclass
class ExternalResult:
    cell: CellKey
    external: str
    source: str
    images: int
    labels: str
    sensitivity: Rate
    specificity: Rate
    specificity_fold_sd: float
    folds: int


def external(result) -> list[ExternalResult]:
    """Per cell, external data set and source: sensitivity and specificity for the positive class
    of the mean prediction of the fold models (each image counted once), and the fold spread.
    Classes are matched by name; only the positive class must exist in both."""
    out = []
    for cell, recs in result.cells.items():
        meta = result.data_meta(cell)
        classes, positive = list(recs[0].classes), meta.get("positive_class")
        if positive not in classes:
            continue
        pos = classes.index(positive)
        for alias in sorted({a for r in recs for a in r.external}):
            parts = [r.external[alias] for r in recs if alias in r.external]
            labels = np.asarray(parts[0].labels)
            sources = np.asarray(parts[0].sources)
            fold_pred = [np.asarray(p.probabilities).argmax(1) == pos for p in parts]
            mean_pred = np.mean([np.asarray(p.probabilities) for p in parts], axis=0).argmax(1) == pos
            for s in sorted(set(sources)):
                m = sources == s
                is_pos, is_neg = (labels == positive) & m, (labels != positive) & m
                spread = [100 * (fp[is_neg] == 0).mean() for fp in fold_pred] if is_neg.any() else []
                out.append(
                    ExternalResult(
                        cell=cell,
                        external=alias,
                        source=str(s),
                        images=int(m.sum()),
                        labels=", ".join(f"{k} {v}" for k, v in zip(*np.unique(labels[m], return_counts=True))),
                        sensitivity=Rate(int(mean_pred[is_pos].sum()), int(is_pos.sum())),
                        specificity=Rate(int((~mean_pred[is_neg]).sum()), int(is_neg.sum())),
                        specificity_fold_sd=float(np.std(spread, ddof=1)) if len(spread) > 1 else float("nan"),
                        folds=len(parts),
                    )
                )
    return out


def external_frame(results: list[ExternalResult]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "Data": e.cell.label,
                "Backbone": e.cell.backbone,
                "External": e.external,
                "Source": e.source,
                "Images": e.images,
                "Labels": e.labels,
                "Sensitivity %": e.sensitivity.text(True),
                "Specificity %": e.specificity.text(True),
                "Specificity fold sd": "n/a" if np.isnan(e.specificity_fold_sd) else f"{e.specificity_fold_sd:.1f}",
                "Folds": e.folds,
            }
            for e in results
        ]
    )
