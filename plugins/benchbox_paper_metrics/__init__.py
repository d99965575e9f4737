"""Evaluators from the stored fold records.

- ``paper``: the study's metrics — confusion matrix pooled over folds, 3-class and 2-class
  accuracy, sensitivity and specificity of the positive class, TP/FP/TN/FN — each with a 95%
  Wilson interval and the fold mean and standard deviation.
- ``clinical``: what the study should also have reported — one-vs-rest ROC AUC of the positive
  class and macro F1 with patient-level bootstrap intervals, balanced accuracy, and precision,
  recall and F1 per class.
"""

from __future__ import annotations

import numpy as np

from benchbox import hookimpl
from benchbox.contracts import Evaluator
from benchbox.metrics import confusion_matrix, paper_metrics
from benchbox.statistics import bootstrap_ci, macro_f1, per_class_prf, positive_auc, wilson


def pooled_predictions(records):
    """Concatenate the test folds of one cell: true labels, predicted labels, fold numbers."""
    y_true = np.concatenate([np.asarray(r["y_true"], dtype=np.int64) for r in records])
    y_pred = np.concatenate([np.asarray(r["probabilities"], dtype=float).argmax(axis=1) for r in records])
    folds = np.concatenate([np.full(len(r["y_true"]), r["fold"]) for r in records])
    return y_true, y_pred, folds


def pooled_groups(records) -> np.ndarray:
    """Patient of every pooled test sample (the image id where an old record lacks groups)."""
    return np.concatenate([np.asarray(r.get("test_groups") or r.get("test_ids") or
                                      [f"{r['fold']}/{i}" for i in range(len(r["y_true"]))]) for r in records])


class PaperMetrics(Evaluator):
    name = "paper"
    description = "the study's metrics: 3-/2-class accuracy, sensitivity, specificity, TP/FP/TN/FN; Wilson 95% CIs, fold spread"

    def evaluate(self, records, classes, positive_class):
        y_true, y_pred, folds = pooled_predictions(records)
        m = paper_metrics(y_true, y_pred, classes, positive_class, folds=folds)
        cm = np.asarray(m["confusion"])
        n = int(cm.sum())
        successes = {"accuracy_3class": (int(np.trace(cm)), n), "accuracy_2class": (m["tp"] + m["tn"], n),
                     "sensitivity": (m["tp"], m["tp"] + m["fn"]), "specificity": (m["tn"], m["tn"] + m["fp"])}
        for key, (k, total) in successes.items():
            m[f"{key}_ci_low"], m[f"{key}_ci_high"] = wilson(k, total)
        return m


class ClinicalMetrics(Evaluator):
    name = "clinical"
    description = "ROC AUC and macro F1 with patient-bootstrap 95% CIs, balanced accuracy, per-class P/R/F1"

    def __init__(self, n_boot: int = 1000, seed: int = 0):
        self.n_boot, self.seed = n_boot, seed

    def evaluate(self, records, classes, positive_class):
        y_true, y_pred, _ = pooled_predictions(records)
        probs = np.concatenate([np.asarray(r["probabilities"], dtype=float) for r in records])
        groups = pooled_groups(records)
        k, pos = len(classes), list(classes).index(positive_class)
        cm = confusion_matrix(y_true, y_pred, k)
        precision, recall, f1 = per_class_prf(cm)
        present = cm.sum(1) > 0
        out = {"auc": positive_auc(y_true, probs, pos), "macro_f1": macro_f1(y_true, y_pred, k),
               "balanced_accuracy": float(recall[present].mean()) if present.any() else float("nan")}
        out["auc_ci_low"], out["auc_ci_high"] = bootstrap_ci(
            lambda i: positive_auc(y_true[i], probs[i], pos), groups, self.n_boot, self.seed)
        out["macro_f1_ci_low"], out["macro_f1_ci_high"] = bootstrap_ci(
            lambda i: macro_f1(y_true[i], y_pred[i], k), groups, self.n_boot, self.seed)
        for c, name in enumerate(classes):
            out[f"precision_{name}"], out[f"recall_{name}"], out[f"f1_{name}"] = (
                float(precision[c]), float(recall[c]), float(f1[c]))
        return out


@hookimpl
def benchbox_evaluators():
    return [PaperMetrics(), ClinicalMetrics()]
