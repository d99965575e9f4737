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
    ranks = midranks(np.asarray(probabilities)[:, positive])
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def midranks(x) -> np.ndarray:
    """1-based ranks of a 1-D array, ties given their average rank: scipy.stats.rankdata(x) in numpy, so
    that scoring a run does not import scipy.stats (about 1 s of every `benchbox report`'s start-up)."""
    x = np.asarray(x).ravel()
    order = np.argsort(x, kind="stable")
    ordered = x[order]
    new_value = np.r_[True, ordered[1:] != ordered[:-1]] if len(x) else np.zeros(0, bool)
    starts = np.flatnonzero(new_value)
    sizes = np.diff(np.r_[starts, len(x)])
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(starts + (sizes + 1) / 2, sizes)
    return ranks


def roc_points(is_positive, scores) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rates, true-positive rates) of the ROC curve from (0, 0), one point per distinct
    score from the highest down: sklearn.metrics.roc_curve(..., drop_intermediate=False) in numpy."""
    y = np.asarray(is_positive, dtype=bool)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    ranked, y = np.asarray(scores, dtype=np.float64)[order], y[order]
    last_of_value = np.r_[ranked[1:] != ranked[:-1], True] if len(y) else np.zeros(0, bool)
    tp = np.cumsum(y)[last_of_value]
    fp = np.cumsum(~y)[last_of_value]
    with np.errstate(divide="ignore", invalid="ignore"):
        tpr = np.r_[0.0, tp / tp[-1]] if len(tp) else np.zeros(1)
        fpr = np.r_[0.0, fp / fp[-1]] if len(fp) else np.zeros(1)
    return fpr, tpr


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
    inverse, n_groups = _group_numbers(groups)
    members = [np.flatnonzero(inverse == g) for g in range(n_groups)]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        pick = rng.integers(0, n_groups, n_groups)
        idx = np.concatenate([members[g] for g in pick])
        values.append(statistic(idx))
    return percentile_interval(np.asarray(values, dtype=float), n_boot, level)


def _group_numbers(groups) -> tuple[np.ndarray, int]:
    """Each sample's group as a number, groups numbered in the order they first appear; the group count."""
    groups = np.asarray(groups)
    uniq, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    return np.argsort(np.argsort(first))[inverse.ravel()], len(uniq)  # name order -> order of first appearance


def percentile_interval(values: np.ndarray, n_boot: int, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of the finite bootstrap values; (nan, nan) when fewer than half are finite."""
    values = values[np.isfinite(values)]
    if len(values) < n_boot // 2:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def bootstrap_ci_counts(
    statistic: Callable[[np.ndarray], np.ndarray], groups, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """``bootstrap_ci`` for a statistic computed on all resamples at once: ``statistic(counts)`` takes a
    (B, n) block of how often each sample is drawn in B resamples and returns B values. The same resamples
    (the same draws from the same seed) and the same interval; with ``auc_of_counts`` or
    ``macro_f1_of_counts`` the same values, bit for bit (tests/test_statistics.py), 50-100x faster than
    calling the statistic on each resample's indices."""
    inverse, n_groups = _group_numbers(groups)
    rng = np.random.default_rng(seed)
    block = max(1, 2_000_000 // max(1, len(inverse)))  # at most ~16 MB of counts at a time
    values = []
    for start in range(0, n_boot, block):
        rows = min(block, n_boot - start)
        picks = rng.integers(0, n_groups, (rows, n_groups))  # the same draws as bootstrap_ci's, one per call
        drawn = np.bincount((picks + n_groups * np.arange(rows)[:, None]).ravel(), minlength=rows * n_groups)
        counts = drawn.reshape(rows, n_groups)[:, inverse].astype(float)
        values.append(np.asarray(statistic(counts), dtype=float))
    return percentile_interval(np.concatenate(values) if values else np.zeros(0), n_boot, level)


def auc_of_counts(y_true, probabilities, positive: int, counts: np.ndarray) -> np.ndarray:
    """``positive_auc`` of each resample given as counts (B, n): the Mann-Whitney statistic counted in
    whole pairs (a tie half), as the ranks of the resample's repeated samples give it; exact in float64."""
    y = np.asarray(y_true) == positive
    score = np.asarray(probabilities, dtype=float)[:, positive]
    order = np.argsort(score, kind="stable")
    sorted_score = score[order]
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])  # runs of tied scores
    c = counts[:, order]
    pos = np.add.reduceat(c * y[order], starts, axis=1)
    neg = np.add.reduceat(c * ~y[order], starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negatives scored strictly lower
    u = (pos * (below + 0.5 * neg)).sum(axis=1)
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def macro_f1_of_counts(y_true, y_pred, num_classes: int, counts: np.ndarray) -> np.ndarray:
    """``macro_f1`` of each resample given as counts (B, n): each resample's confusion matrix, then the
    same arithmetic per row."""
    flat = np.asarray(y_true, dtype=np.int64) * num_classes + np.asarray(y_pred, dtype=np.int64)
    onehot = np.zeros((len(flat), num_classes * num_classes))
    onehot[np.arange(len(flat)), flat] = 1.0
    cms = (counts @ onehot).reshape(len(counts), num_classes, num_classes)
    tp = np.diagonal(cms, axis1=1, axis2=2)
    predicted, actual = cms.sum(axis=1), cms.sum(axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):  # per_class_prf's arithmetic, row by row
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = actual > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(present, f1, 0.0).sum(axis=1) / present.sum(axis=1)  # nan where no class is present


def mcnemar(correct_a, correct_b) -> dict:
    """McNemar's test on paired correct/incorrect outcomes of two classifiers."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    n = only_a + only_b
    if n == 0:
        return {"only_a": 0, "only_b": 0, "statistic": 0.0, "p_value": 1.0, "method": "exact"}
    # the two distributions in closed form (not scipy.stats: its import is most of a report's start-up)
    if n < 25:  # exact: twice the binomial(n, 1/2) lower tail at the smaller discordant count
        p = min(1.0, 2 * sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2**n)
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
        "p_value": math.erfc(math.sqrt(chi2 / 2)),  # chi-square with 1 degree of freedom, upper tail
        "method": "chi2-cc",
    }
