"""Uncertainty and paired comparisons, from stored predictions alone (numpy, scipy, scikit-learn).

- Wilson score intervals for proportions (sensitivity, specificity, accuracies).
- Patient-level bootstrap: resample patients (not images) with replacement, seeded; percentile
  interval. Used for ROC AUC and F1, whose sampling distribution has no simple formula.
- McNemar's test for two classifiers on the same samples: exact binomial when the discordant
  count is small (< 25), chi-square with continuity correction otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion; (nan, nan) when n == 0."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def positive_auc(y_true, probabilities, positive: int) -> float:
    """One-vs-rest ROC AUC of the positive class from its probability; nan if only one side exists."""
    y = np.asarray(y_true) == positive
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # Mann-Whitney U with average ranks for ties: equal to the area under the ROC curve
    from scipy import stats  # imported on use: it costs most of a command's start-up time

    ranks = stats.rankdata(np.asarray(probabilities)[:, positive])
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Counts with actual labels as rows and predictions as columns (a class never predicted
    simply has a zero column)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    flat = y_true * num_classes + y_pred
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_prf(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 per class from a confusion matrix (rows actual); 0 where undefined
    (scikit-learn's zero_division=0 convention)."""
    cm = np.asarray(cm, dtype=float)
    tp = np.diag(cm)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(cm.sum(0) > 0, tp / cm.sum(0), 0.0)
        recall = np.where(cm.sum(1) > 0, tp / cm.sum(1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return precision, recall, f1


def macro_f1(y_true, y_pred, num_classes: int) -> float:
    cm = confusion_matrix(y_true, y_pred, num_classes)
    present = cm.sum(1) > 0
    return float(per_class_prf(cm)[2][present].mean()) if present.any() else float("nan")


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float], groups, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of ``statistic(indices)`` over resamples of whole groups (patients).

    Groups are numbered in the order they first appear, not by name, so the interval does not depend on
    what the patients are called (a bundle with hashed ids re-scores to the same interval)."""
    groups = np.asarray(groups)
    uniq, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    inverse = np.argsort(np.argsort(first))[inverse.ravel()]  # name order -> order of first appearance
    members = [np.flatnonzero(inverse == g) for g in range(len(uniq))]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(uniq), len(uniq))
        idx = np.concatenate([members[g] for g in pick])
        v = statistic(idx)
        if np.isfinite(v):
            values.append(v)
    if len(values) < n_boot // 2:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def mcnemar(correct_a, correct_b) -> dict:
    """McNemar's test on paired correct/incorrect outcomes of two classifiers."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    n = only_a + only_b
    if n == 0:
        return {"only_a": 0, "only_b": 0, "statistic": 0.0, "p_value": 1.0, "method": "exact"}
    from scipy import stats

    if n < 25:
        p = min(1.0, 2 * stats.binom.cdf(min(only_a, only_b), n, 0.5))
        return {
            "only_a": only_a,
            "only_b": only_b,
            "statistic": float(min(only_a, only_b)),
            "p_value": float(p),
            "method": "exact",
        }
    chi2 = (abs(only_a - only_b) - 1) ** 2 / n
    return {
        "only_a": only_a,
        "only_b": only_b,
        "statistic": float(chi2),
        "p_value": float(stats.chi2.sf(chi2, 1)),
        "method": "chi2-cc",
    }
