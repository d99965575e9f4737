"""The study's metrics, exactly as Apostolopoulos & Mpesiana (2020) define them. Pure numpy.

COVID-19 (any ``positive`` class) against the rest:
TP/FP/TN/FN come from the multi-class confusion matrix; accuracy (2-class) = (TP+TN)/all;
sensitivity = TP/(TP+FN); specificity = TN/(TN+FP); 3-class accuracy = trace/all.
Pooled figures use the confusion matrix summed over the test folds, as the paper reports them;
the fold mean and standard deviation show the spread.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from benchbox.results.statistics import confusion_matrix

HEADLINE = ("accuracy_3class", "accuracy_2class", "sensitivity", "specificity")


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


def counts_from_confusion(cm: np.ndarray, positive: int) -> dict[str, int]:
    """TP/FP/TN/FN of the positive class against the rest."""
    cm = np.asarray(cm)
    tp = int(cm[positive, positive])
    fn = int(cm[positive, :].sum()) - tp
    fp = int(cm[:, positive].sum()) - tp
    tn = int(cm.sum()) - tp - fn - fp
    return {"tp": tp, "fp": fp, "tn": tn, "fn": fn}


def metrics_from_confusion(cm: np.ndarray, positive: int) -> dict[str, float]:
    """The study's four figures and the positive-class counts from one confusion matrix."""
    c = counts_from_confusion(cm, positive)
    total = int(np.asarray(cm).sum())
    return {
        "accuracy_3class": _ratio(np.trace(cm), total),
        "accuracy_2class": _ratio(c["tp"] + c["tn"], total),
        "sensitivity": _ratio(c["tp"], c["tp"] + c["fn"]),
        "specificity": _ratio(c["tn"], c["tn"] + c["fp"]),
        **c,
    }


def paper_metrics(y_true, y_pred, classes: Sequence[str], positive_class: str, folds=None) -> dict:
    """Pooled study metrics, plus fold mean and standard deviation when ``folds`` is given.

    Returns a flat dict: accuracy_3class, accuracy_2class, sensitivity, specificity, tp, fp, tn,
    fn, n, confusion (actual x predicted, nested lists), and ``<metric>_fold_mean`` /
    ``<metric>_fold_std`` (sample standard deviation, ddof=1; nan for one fold).
    """
    classes = list(classes)
    if positive_class not in classes:
        raise ValueError(f"positive class {positive_class!r} is not one of {classes}")
    pos = classes.index(positive_class)
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    cm = confusion_matrix(y_true, y_pred, len(classes))
    out = metrics_from_confusion(cm, pos)
    out["n"] = int(cm.sum())
    out["confusion"] = cm.tolist()
    if folds is not None:
        folds = np.asarray(folds)
        per_fold = [
            metrics_from_confusion(confusion_matrix(y_true[folds == f], y_pred[folds == f], len(classes)), pos)
            for f in np.unique(folds)
        ]
        for key in HEADLINE:
            values = np.array([m[key] for m in per_fold], dtype=float)
            out[f"{key}_folds"] = values.tolist()
            out[f"{key}_fold_mean"] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
            finite = values[np.isfinite(values)]
            out[f"{key}_fold_std"] = float(np.std(finite, ddof=1)) if len(finite) > 1 else float("nan")
        out["folds"] = len(per_fold)
    return out
