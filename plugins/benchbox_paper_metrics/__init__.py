"""Evaluators from the stored fold records.

- ``paper``: the study's metrics — confusion matrix pooled over folds, 3-class and 2-class
  accuracy, sensitivity and specificity of the positive class, TP/FP/TN/FN — each with a 95%
  Wilson interval and the fold mean and standard deviation; the study's Table 4 (counts) and
  Tables 3/6 (pooled confusion matrices), and confusion-matrix heat-maps.
- ``clinical``: what the study should also have reported — one-vs-rest ROC AUC of the positive
  class and macro F1 with patient-level bootstrap intervals, balanced accuracy, and precision,
  recall and F1 per class.
- ``calibration`` (``calibration.py``): Brier score and expected calibration error, pooled and per
  fold (lower is better), a reliability table per cell and a reliability diagram per data set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchbox import hookimpl
from benchbox.contracts import Evaluator, MetricSpec, Section
from benchbox.results.statistics import (
    auc_of_counts,
    bootstrap_ci_counts,
    confusion_matrix,
    macro_f1,
    macro_f1_of_counts,
    per_class_prf,
    positive_auc,
    wilson,
)
from benchbox_paper_metrics.calibration import CalibrationMetrics
from benchbox_paper_metrics.metrics import HEADLINE, paper_metrics


def pooled_predictions(records):
    """Concatenate the test folds of one cell: true labels, predicted labels, fold numbers."""
    y_true = np.concatenate([np.asarray(r.y_true, dtype=np.int64) for r in records])
    y_pred = np.concatenate([r.predicted for r in records])
    folds = np.concatenate([np.full(len(r.y_true), r.fold) for r in records])
    return y_true, y_pred, folds


def pooled_groups(records) -> np.ndarray:
    """Patient of every pooled test sample."""
    return np.concatenate([np.asarray(r.test_groups) for r in records])


def _pct(name, label, interval="wilson", plot=False, paired_test="") -> MetricSpec:
    return MetricSpec(name, label, scale=100, unit="%", interval=interval, plot=plot, paired_test=paired_test)


class PaperMetrics(Evaluator):
    name = "paper"
    description = (
        "the study's metrics: 3-/2-class accuracy, sensitivity, specificity, TP/FP/TN/FN; Wilson 95% CIs, fold spread"
    )
    metrics = (
        _pct("accuracy_3class", "Acc 3-class", plot=True, paired_test="accuracy"),
        _pct("accuracy_2class", "Acc 2-class", plot=True),
        _pct("sensitivity", "Sensitivity", plot=True),
        _pct("specificity", "Specificity", plot=True),
    )

    def evaluate(self, records, classes, positive_class):
        y_true, y_pred, folds = pooled_predictions(records)
        m = paper_metrics(y_true, y_pred, classes, positive_class, folds=folds)
        cm = np.asarray(m["confusion"])
        n = int(cm.sum())
        successes = {
            "accuracy_3class": (int(np.trace(cm)), n),
            "accuracy_2class": (m["tp"] + m["tn"], n),
            "sensitivity": (m["tp"], m["tp"] + m["fn"]),
            "specificity": (m["tn"], m["tn"] + m["fp"]),
        }
        for key, (k, total) in successes.items():
            m[f"{key}_ci_low"], m[f"{key}_ci_high"] = wilson(k, total)
        return m

    def sections(self, result):
        rows = [r for _, r in result.summary.iterrows() if isinstance(r.get("confusion"), list)]
        if not rows:
            return []
        counts = pd.DataFrame(
            [
                {
                    "Data": r["data"],
                    "Backbone": r["backbone"],
                    "Positive": r["positive_class"],
                    "TP": int(r["tp"]),
                    "FP": int(r["fp"]),
                    "TN": int(r["tn"]),
                    "FN": int(r["fn"]),
                }
                for r in rows
            ]
        )
        out = [Section("Positive-class counts (the study's Table 4)", counts)]
        long_form = []
        for r in rows:
            classes = list(r["classes"])
            cm = pd.DataFrame(r["confusion"], index=classes, columns=classes).T  # rows: predicted
            long_form += [
                {"data": r["data"], "backbone": r["backbone"], "predicted": p, "actual": a, "count": int(cm.loc[p, a])}
                for p in classes
                for a in classes
            ]
            cm.index = [f"pred {c}" for c in classes]
            cm.columns = [f"actual {c}" for c in classes]
            out.append(
                Section(
                    f"Confusion matrix: {r['data']} x {r['backbone']} (predicted rows, actual columns)",
                    cm.reset_index(names=""),
                )
            )
        out.append(
            Section(
                "Pooled confusion matrices, long form", pd.DataFrame(long_form), csv="confusion.csv", in_report=False
            )
        )
        return out

    def plots(self, result, directory: Path):
        """One pooled confusion matrix per cell. Cells with the same classes share one figure, redrawn for
        each (its layout computed once): building and laying out a figure cost as much as drawing it, and a
        20-encoder suite has 40 cells."""
        from benchbox.results.views.plots import pyplot, save

        plt = pyplot()
        written = []
        figures: dict[tuple, tuple] = {}
        try:
            for _, r in result.summary.iterrows():
                if not isinstance(r.get("confusion"), list):
                    continue
                classes, cm = list(r["classes"]), np.asarray(r["confusion"]).T  # predicted rows, actual columns
                if tuple(classes) not in figures:
                    figures[tuple(classes)] = _confusion_figure(plt, classes)
                fig, image, texts, title = figures[tuple(classes)]
                image.set_data(cm)
                image.set_clim(0, max(int(cm.max()), 1))
                for i in range(len(classes)):
                    for j in range(len(classes)):
                        # text colour from the cell's own luminance: dark text on light cells, white on dark
                        red, green, blue, _ = image.cmap(image.norm(cm[i, j]))
                        light = 0.299 * red + 0.587 * green + 0.114 * blue > 0.5
                        texts[i][j].set_text(str(int(cm[i, j])))
                        texts[i][j].set_color("black" if light else "white")
                title.set_text(
                    f"{result.manifest.get('suite', '')}: {r['data']} x {r['backbone']}\npooled confusion matrix"
                )
                written.append(save(fig, directory / f"confusion__{r['cell'].slug}.png", close=False))
        finally:
            for fig, *_ in figures.values():
                plt.close(fig)
        return written


def _confusion_figure(plt, classes: list):
    """(figure, image, texts[i][j], title) of a confusion matrix of these classes, laid out once."""
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * k, 1.2 + 1.1 * k))
    image = ax.imshow(np.zeros((k, k)), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), classes, rotation=30, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("actual class")
    ax.set_ylabel("predicted class")
    texts = [[ax.text(j, i, "0", ha="center", va="center") for j in range(k)] for i in range(k)]
    title = ax.set_title("suite: data x backbone\npooled confusion matrix", fontsize=9)
    fig.tight_layout()
    return fig, image, texts, title


class ClinicalMetrics(Evaluator):
    name = "clinical"
    description = "ROC AUC and macro F1 with patient-bootstrap 95% CIs, balanced accuracy, per-class P/R/F1"
    metrics = (
        MetricSpec("auc", "AUC", digits=3, interval="bootstrap", paired_test="auc"),
        MetricSpec("macro_f1", "Macro F1", digits=3, interval="bootstrap", table=False),
        MetricSpec("balanced_accuracy", "Balanced acc.", scale=100, unit="%", table=False),
    )

    def __init__(self, n_boot: int = 1000, seed: int = 0):
        self.n_boot, self.seed = n_boot, seed

    def evaluate(self, records, classes, positive_class):
        y_true, y_pred, _ = pooled_predictions(records)
        probs = np.concatenate([np.asarray(r.probabilities, dtype=float) for r in records])
        groups = pooled_groups(records)
        k, pos = len(classes), list(classes).index(positive_class)
        out = self.point_values(y_true, y_pred, probs, k, pos)
        out["auc_ci_low"], out["auc_ci_high"] = bootstrap_ci_counts(
            lambda counts: auc_of_counts(y_true, probs, pos, counts), groups, self.n_boot, self.seed
        )
        out["macro_f1_ci_low"], out["macro_f1_ci_high"] = bootstrap_ci_counts(
            lambda counts: macro_f1_of_counts(y_true, y_pred, k, counts), groups, self.n_boot, self.seed
        )
        cm = confusion_matrix(y_true, y_pred, k)
        precision, recall, f1 = per_class_prf(cm)
        for c, name in enumerate(classes):
            out[f"precision_{name}"], out[f"recall_{name}"], out[f"f1_{name}"] = (
                float(precision[c]),
                float(recall[c]),
                float(f1[c]),
            )
        return out

    def evaluate_each(self, records, classes, positive_class):
        """AUC, macro F1 and balanced accuracy of each record alone, without the bootstrap."""
        k, pos = len(classes), list(classes).index(positive_class)
        return [
            self.point_values(*pooled_predictions([r])[:2], np.asarray(r.probabilities, dtype=float), k, pos)
            for r in records
        ]

    @staticmethod
    def point_values(y_true, y_pred, probs, k: int, pos: int) -> dict:
        """AUC of the positive class, macro F1 and balanced accuracy, without intervals."""
        cm = confusion_matrix(y_true, y_pred, k)
        recall, present = per_class_prf(cm)[1], cm.sum(1) > 0
        return {
            "auc": positive_auc(y_true, probs, pos),
            "macro_f1": macro_f1(y_true, y_pred, k),
            "balanced_accuracy": float(recall[present].mean()) if present.any() else float("nan"),
        }


@hookimpl
def benchbox_evaluators():
    return [PaperMetrics(), ClinicalMetrics(), CalibrationMetrics()]


__all__ = ["PaperMetrics", "ClinicalMetrics", "CalibrationMetrics", "HEADLINE", "paper_metrics"]
