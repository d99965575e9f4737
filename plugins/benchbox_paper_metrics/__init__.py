"""The study's evaluator: confusion matrix pooled over folds, 3-class and 2-class accuracy,
sensitivity and specificity of the positive class, TP/FP/TN/FN, and the fold spread."""

from __future__ import annotations

import numpy as np

from benchbox import hookimpl
from benchbox.contracts import Evaluator
from benchbox.metrics import paper_metrics


def pooled_predictions(records):
    """Concatenate the test folds of one cell: true labels, predicted labels, fold numbers."""
    y_true = np.concatenate([np.asarray(r["y_true"], dtype=np.int64) for r in records])
    y_pred = np.concatenate([np.asarray(r["probabilities"], dtype=float).argmax(axis=1) for r in records])
    folds = np.concatenate([np.full(len(r["y_true"]), r["fold"]) for r in records])
    return y_true, y_pred, folds


class PaperMetrics(Evaluator):
    name = "paper"
    description = "the study's metrics: 3-/2-class accuracy, sensitivity, specificity, TP/FP/TN/FN, fold spread"

    def evaluate(self, records, classes, positive_class):
        y_true, y_pred, folds = pooled_predictions(records)
        return paper_metrics(y_true, y_pred, classes, positive_class, folds=folds)


@hookimpl
def benchbox_evaluators():
    return [PaperMetrics()]
