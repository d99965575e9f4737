"""Paired comparisons of classifiers and calibration, from stored predictions alone (numpy, scipy).

Which test answers which question:

- Two entries on the *same folds* (same data and split fingerprints), a per-fold metric:
  :func:`corrected_resampled_ttest` (Nadeau & Bengio 2003, in the r x k form of Bouckaert & Frank
  2004). The plain paired t-test over CV folds is anti-conservative because the training sets
  overlap; the correction inflates the variance by the test/train size ratio.
- Two entries' ROC AUCs on the *same images*: :func:`delong_test` (DeLong, DeLong &
  Clarke-Pearson 1988), computed with the midrank algorithm of Sun & Xu (2014).
- Two entries' accuracies on the same images: :func:`mcnemar_exact` (McNemar 1947; exact binomial
  on the discordant pairs).
- Several pairs at once: :func:`holm` (Holm 1979) adjusts the family's p-values.
- Many entries over many data sets: :func:`friedman` and :func:`nemenyi_cd` / :func:`cd_cliques`
  (Demšar 2006, the critical-difference diagram).
- Calibration: :func:`brier_score` (Brier 1950, multi-class form), :func:`expected_calibration_error`
  and :func:`reliability_bins` (Naeini et al. 2015; Guo et al. 2017: top-label confidence, equal-width
  bins).

Every function takes plain arrays and returns floats or dicts of floats, so views and tests can use
them without a run directory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Demšar (2006), Table 5(a): critical values q_alpha for the two-tailed Nemenyi test, k = 2..10
# classifiers; they are the studentized range statistic's quantiles (infinite degrees of freedom)
# divided by sqrt(2).
NEMENYI_Q = {
    0.05: {2: 1.960, 3: 2.343, 4: 2.569, 5: 2.728, 6: 2.850, 7: 2.949, 8: 3.031, 9: 3.102, 10: 3.164},
    0.10: {2: 1.645, 3: 2.052, 4: 2.291, 5: 2.459, 6: 2.589, 7: 2.693, 8: 2.780, 9: 2.855, 10: 2.920},
}

ECE_BINS = 15


def _stats():
    from scipy import stats  # imported on use: it costs most of a command's start-up time

    return stats


# ---------------------------------------------------------------------------------------------
# the corrected resampled t-test


def corrected_resampled_ttest(differences, n_train, n_test) -> dict:
    """Corrected resampled t-test of a mean score difference over r x k cross-validation folds.

    Nadeau & Bengio (2003), "Inference for the generalization error", Machine Learning 52:239-281,
    the corrected resampled t-test; in the form Bouckaert & Frank (2004), "Evaluating the
    replicability of significance tests for comparing learning algorithms" (PAKDD), give for r
    repetitions of k-fold cross-validation::

        t = mean(d) / sqrt( (1/(r*k) + n2/n1) * s^2 )

    where ``d`` are the r*k per-fold differences of the two entries' scores (same folds),
    ``s^2`` their sample variance (ddof = 1), ``n1`` the training and ``n2`` the test set size of a
    fold; ``t`` follows Student's t with r*k - 1 degrees of freedom. Without the ``n2/n1`` term this
    is the ordinary paired t-test, which ignores that the folds' training sets overlap and so rejects
    far too often.

    ``n_train`` and ``n_test`` may be numbers or per-fold sequences (folds differ by a few images;
    their means are used). Returns ``mean``, ``t``, ``df``, ``p_value`` (two-sided), ``se`` (the
    corrected standard error of the mean difference) and ``folds``. With zero variance the
    difference is certain: ``t`` is 0 and p is 1 when the mean is 0, otherwise t is +-inf and p is 0.
    """
    d = np.asarray(differences, dtype=float).ravel()
    if d.size < 2:
        raise ValueError(
            f"the corrected resampled t-test needs at least 2 per-fold differences, got {d.size}; "
            "compare entries with 2 or more folds"
        )
    if not np.all(np.isfinite(d)):
        raise ValueError("the per-fold differences hold nan or inf; drop the folds where either entry has no score")
    n1 = float(np.mean(n_train))
    n2 = float(np.mean(n_test))
    if not (n1 > 0 and n2 > 0):
        raise ValueError(f"n_train ({n1}) and n_test ({n2}) must be positive: they are the folds' set sizes")
    folds = d.size
    mean = float(d.mean())
    var = float(d.var(ddof=1))
    se = math.sqrt((1.0 / folds + n2 / n1) * var)
    df = folds - 1
    if se == 0.0:
        t = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
        p = 1.0 if mean == 0.0 else 0.0
    else:
        t = mean / se
        p = float(2 * _stats().t.sf(abs(t), df))
    return {"mean": mean, "t": float(t), "df": df, "p_value": min(1.0, p), "se": se, "folds": folds}


# ---------------------------------------------------------------------------------------------
# DeLong's test for two correlated ROC AUCs


def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank (Sun & Xu 2014, Algorithm 1)."""
    from benchbox.results.statistics import midranks

    return midranks(x)


def _structural_components(is_positive: np.ndarray, scores: np.ndarray):
    """AUCs and DeLong's structural components V10 (per positive) and V01 (per negative).

    ``scores`` is (n_classifiers, n_samples). With m positives X and n negatives Y, Sun & Xu (2014)
    compute from midranks: T_X within X, T_Y within Y, T_Z within X u Y;
    AUC = (sum T_Z[X] - m(m+1)/2) / (m n), V10 = (T_Z[X] - T_X) / n, V01 = 1 - (T_Z[Y] - T_Y) / m.
    """
    pos = scores[:, is_positive]
    neg = scores[:, ~is_positive]
    m, n = pos.shape[1], neg.shape[1]
    aucs, v10, v01 = [], [], []
    for r in range(scores.shape[0]):
        tx = _midranks(pos[r])
        ty = _midranks(neg[r])
        tz = _midranks(np.concatenate([pos[r], neg[r]]))
        aucs.append((tz[:m].sum() - m * (m + 1) / 2) / (m * n))
        v10.append((tz[:m] - tx) / n)
        v01.append(1.0 - (tz[m:] - ty) / m)
    return np.asarray(aucs), np.asarray(v10), np.asarray(v01)


def _binary(is_positive, *scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(is_positive)
    if y.dtype != bool:
        values = set(np.unique(y).tolist())
        if not values <= {0, 1}:
            raise ValueError(
                f"is_positive must be boolean or 0/1, got values {sorted(values)[:5]}; "
                "pass y_true == positive_index for a multi-class label"
            )
        y = y.astype(bool)
    rows = [np.asarray(v, dtype=float).ravel() for v in scores]
    for row in rows:
        if row.size != y.size:
            raise ValueError(f"{y.size} labels but {row.size} scores; both must list the same images in the same order")
    s = np.vstack(rows)
    if not np.all(np.isfinite(s)):
        raise ValueError("scores hold nan or inf; every image needs a finite score")
    m = int(y.sum())
    if m < 2 or y.size - m < 2:
        raise ValueError(f"DeLong's variance needs at least 2 positive and 2 negative images, got {m} and {y.size - m}")
    return y, s


def delong_auc(is_positive, scores) -> dict:
    """One ROC AUC and its DeLong standard error (DeLong, DeLong & Clarke-Pearson 1988, Biometrics
    44:837-845): var = S10/m + S01/n from the structural components' variances."""
    y, s = _binary(is_positive, scores)
    aucs, v10, v01 = _structural_components(y, s)
    m, n = v10.shape[1], v01.shape[1]
    var = float(np.var(v10[0], ddof=1) / m + np.var(v01[0], ddof=1) / n)
    return {"auc": float(aucs[0]), "se": math.sqrt(max(var, 0.0)), "positives": m, "negatives": n}


def delong_test(is_positive, scores_a, scores_b) -> dict:
    """DeLong's test for the difference of two correlated ROC AUCs on the same images.

    DeLong, DeLong & Clarke-Pearson (1988), "Comparing the areas under two or more correlated
    receiver operating characteristic curves: a nonparametric approach", Biometrics 44:837-845;
    computed with the fast midrank algorithm of Sun & Xu (2014), IEEE Signal Processing Letters
    21(11):1389-1393. With S10, S01 the covariance matrices (ddof = 1) of the two classifiers'
    structural components over the m positives and n negatives, S = S10/m + S01/n and
    var(AUC_a - AUC_b) = S_aa + S_bb - 2 S_ab; z = difference / SE is standard normal under H0.

    ``is_positive``: boolean (or 0/1) per image; ``scores_a`` / ``scores_b``: each classifier's score
    for the positive class (e.g. its probability), same images in the same order. Returns
    ``auc_a``, ``auc_b``, ``difference`` (a - b), ``se``, ``z`` and ``p_value`` (two-sided). When the
    variance is 0 (e.g. identical scores) z is 0 and p is 1 for a zero difference, otherwise z is
    +-inf and p is 0.
    """
    y, s = _binary(is_positive, scores_a, scores_b)
    aucs, v10, v01 = _structural_components(y, s)
    m, n = v10.shape[1], v01.shape[1]
    cov = np.cov(v10, ddof=1) / m + np.cov(v01, ddof=1) / n
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = float(aucs[0] - aucs[1])
    se = math.sqrt(max(var, 0.0))
    if se < 1e-15:
        z = 0.0 if abs(diff) < 1e-15 else math.copysign(math.inf, diff)
        p = 1.0 if z == 0.0 else 0.0
    else:
        z = diff / se
        p = float(2 * _stats().norm.sf(abs(z)))
    return {
        "auc_a": float(aucs[0]),
        "auc_b": float(aucs[1]),
        "difference": diff,
        "se": se,
        "z": float(z),
        "p_value": min(1.0, p),
        "positives": m,
        "negatives": n,
    }


# ---------------------------------------------------------------------------------------------
# exact McNemar, Holm


def mcnemar_exact(correct_a, correct_b) -> dict:
    """Exact McNemar test of two classifiers' accuracies on the same images.

    McNemar (1947), Psychometrika 12:153-157; the exact form conditions on the n discordant pairs:
    under H0 the images only A gets right are Binomial(n, 1/2), so the two-sided p-value is the
    binomial test's (scipy.stats.binomtest). Returns ``only_a``, ``only_b``, ``discordant`` and
    ``p_value`` (1 when there is no discordant image).
    """
    a = np.asarray(correct_a, dtype=bool).ravel()
    b = np.asarray(correct_b, dtype=bool).ravel()
    if a.shape != b.shape:
        raise ValueError(f"{a.size} and {b.size} outcomes: McNemar compares the same images, in the same order")
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    n = only_a + only_b
    p = 1.0 if n == 0 else float(_stats().binomtest(only_a, n, 0.5).pvalue)
    return {"only_a": only_a, "only_b": only_b, "discordant": n, "p_value": min(1.0, p)}


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's (1979) step-down adjusted p-values, in the input order.

    Holm, "A simple sequentially rejective multiple test procedure", Scand. J. Statist. 6:65-70.
    With the m p-values sorted ascending, p_(i) is adjusted to max_{j <= i} min(1, (m - j + 1) p_(j)),
    so the adjusted values are monotone in the raw ones; rejecting where adjusted <= alpha controls
    the family-wise error rate at alpha. A nan (a test that could not be made) stays nan and does
    not count towards m.
    """
    p = np.asarray(p_values, dtype=float).ravel()
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    if finite.size == 0:
        return out
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p[finite].tolist()}")
    m = finite.size
    order = finite[np.argsort(p[finite], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


# ---------------------------------------------------------------------------------------------
# Friedman, Nemenyi critical difference


def average_ranks(scores, higher_is_better: bool = True) -> np.ndarray:
    """Ranks of the entries (columns) within each data set (row), 1 = best, ties averaged;
    averaged over the data sets (Demšar 2006, section 3.2.2)."""
    x = np.asarray(scores, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"scores must be a (data sets x entries) matrix, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("the score matrix holds nan or inf; each entry needs a score on every data set")
    ranks = _stats().rankdata(-x if higher_is_better else x, axis=1)
    return ranks.mean(axis=0)


def friedman(scores, higher_is_better: bool = True) -> dict:
    """Friedman's test that all entries (columns) perform equally over the data sets (rows).

    Friedman (1937, 1940); Demšar (2006), JMLR 7:1-30, eq. for chi2_F and the Iman-Davenport
    F_F. With ranks r_ij within each data set (ties averaged) and R_j their means over N data sets,
    chi2_F = 12N/(k(k+1)) * (sum_j R_j^2 - k(k+1)^2/4), divided by the tie correction
    1 - sum(t^3 - t) / (N k (k^2 - 1)) (t: the sizes of the tie groups within a row), with k - 1
    degrees of freedom; F_F = (N-1) chi2_F / (N(k-1) - chi2_F) with (k-1, (k-1)(N-1)) degrees of
    freedom (Iman & Davenport 1980, less conservative). Returns ``ranks`` (average ranks),
    ``chi2``, ``p_value``, ``f``, ``f_p_value``, ``n_datasets``, ``k``.
    """
    x = np.asarray(scores, dtype=float)
    ranks_mean = average_ranks(x, higher_is_better)
    n, k = x.shape
    if k < 3 or n < 2:
        raise ValueError(f"Friedman's test needs at least 3 entries and 2 data sets, got {k} and {n}")
    st = _stats()
    ties = 0.0
    for row in x:
        _, counts = np.unique(row, return_counts=True)
        ties += float(np.sum(counts**3 - counts))
    correction = 1.0 - ties / (n * k * (k * k - 1))
    chi2_raw = 12.0 * n / (k * (k + 1)) * (np.sum(ranks_mean**2) - k * (k + 1) ** 2 / 4.0)
    if correction <= 0:  # every row one tie: no evidence of any difference
        chi2 = 0.0
    else:
        chi2 = float(chi2_raw / correction)
    p = float(st.chi2.sf(chi2, k - 1))
    f = iman_davenport(chi2, n, k)
    f_p = float(st.f.sf(f, k - 1, (k - 1) * (n - 1))) if math.isfinite(f) else 0.0
    return {
        "ranks": ranks_mean,
        "chi2": chi2,
        "p_value": p,
        "f": float(f),
        "f_p_value": f_p,
        "n_datasets": n,
        "k": k,
    }


def iman_davenport(chi2: float, n_datasets: int, k: int) -> float:
    """Iman & Davenport's (1980) F_F = (N-1) chi2_F / (N(k-1) - chi2_F) from Friedman's chi2_F
    (Demšar 2006, section 3.2.2); F-distributed with k-1 and (k-1)(N-1) degrees of freedom. inf when
    the ranks are identical in every data set (chi2_F = N(k-1))."""
    denom = n_datasets * (k - 1) - chi2
    return float((n_datasets - 1) * chi2 / denom) if denom > 0 else math.inf


def nemenyi_q(k: int, alpha: float = 0.05) -> float:
    """Nemenyi's critical value q_alpha for k entries: Demšar (2006) Table 5(a) for k = 2..10; beyond
    the table, the studentized range quantile (infinite df) / sqrt(2), which the table tabulates."""
    if k < 2:
        raise ValueError(f"a critical difference needs at least 2 entries, got {k}")
    table = NEMENYI_Q.get(alpha)
    if table is not None and k in table:
        return table[k]
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    return float(_stats().studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2))


def nemenyi_cd(k: int, n_datasets: int, alpha: float = 0.05) -> float:
    """Nemenyi's critical difference of average ranks, CD = q_alpha sqrt(k(k+1) / (6N)) (Demšar 2006,
    section 3.2.2): two entries whose average ranks differ by at least CD differ significantly."""
    if n_datasets < 1:
        raise ValueError(f"a critical difference needs at least 1 data set, got {n_datasets}")
    return nemenyi_q(k, alpha) * math.sqrt(k * (k + 1) / (6.0 * n_datasets))


def cd_cliques(names: Sequence[str], ranks, cd: float) -> list[list[str]]:
    """The groups of entries not significantly different from one another (the bars of a
    critical-difference diagram, Demšar 2006 Fig. 1): sorted by average rank, each maximal run of
    consecutive entries whose ranks span less than ``cd``. Runs inside another run and single
    entries are left out; the groups are listed best first."""
    names = list(names)
    r = np.asarray(ranks, dtype=float)
    if len(names) != r.size:
        raise ValueError(f"{len(names)} names but {r.size} ranks")
    order = np.argsort(r, kind="stable")
    sorted_r = r[order]
    cliques, reach = [], -1
    for i in range(len(order)):
        j = i
        while j + 1 < len(order) and sorted_r[j + 1] - sorted_r[i] < cd:
            j += 1
        if j > i and j > reach:
            cliques.append([names[o] for o in order[i : j + 1]])
            reach = j
    return cliques


# ---------------------------------------------------------------------------------------------
# calibration


def _probabilities(y_true, probabilities) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(probabilities, dtype=float)
    if p.ndim != 2 or p.shape[0] != y.size:
        raise ValueError(
            f"probabilities must be (images x classes) with one row per label: got {p.shape} for {y.size} labels"
        )
    if y.size and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"labels must index the {p.shape[1]} probability columns, got {y.min()}..{y.max()}")
    return y, p


def brier_score(y_true, probabilities) -> float:
    """Multi-class Brier score (Brier 1950, Monthly Weather Review 78:1-3): the mean over images of
    sum_c (p_c - [y == c])^2, from 0 (certain and right) to 2 (certain and wrong)."""
    y, p = _probabilities(y_true, probabilities)
    if y.size == 0:
        return float("nan")
    onehot = np.zeros_like(p)
    onehot[np.arange(y.size), y] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def reliability_bins(y_true, probabilities, n_bins: int = ECE_BINS) -> list[dict]:
    """Top-label reliability diagram (Guo et al. 2017, "On calibration of modern neural networks",
    ICML): each image's confidence is its largest probability and it counts as right when that class
    is the label; images go into ``n_bins`` equal-width bins of confidence, (i/B, (i+1)/B] (a
    confidence of exactly 0 falls into the first). Per bin: ``lower``, ``upper``, ``count``,
    ``confidence`` (mean) and ``accuracy`` (nan for an empty bin)."""
    y, p = _probabilities(y_true, probabilities)
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    conf = p.max(axis=1) if y.size else np.zeros(0)
    right = (p.argmax(axis=1) == y) if y.size else np.zeros(0, dtype=bool)
    index = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    # one pass over the images (np.bincount), not one mask per bin: boards re-score thousands of folds
    counts = np.bincount(index, minlength=n_bins)
    conf_sum = np.bincount(index, weights=conf, minlength=n_bins)
    right_sum = np.bincount(index, weights=right.astype(float), minlength=n_bins)
    bins = []
    for b in range(n_bins):
        count = int(counts[b])
        bins.append(
            {
                "lower": b / n_bins,
                "upper": (b + 1) / n_bins,
                "count": count,
                "confidence": float(conf_sum[b] / count) if count else float("nan"),
                "accuracy": float(right_sum[b] / count) if count else float("nan"),
            }
        )
    return bins


def expected_calibration_error(y_true, probabilities, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error (Naeini, Cooper & Hauskrecht 2015; Guo et al. 2017, eq. 3):
    sum over the bins of :func:`reliability_bins` of (count / n) * |accuracy - confidence|;
    0 for a perfectly calibrated model, nan with no images."""
    bins = reliability_bins(y_true, probabilities, n_bins)
    n = sum(b["count"] for b in bins)
    if n == 0:
        return float("nan")
    return float(sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]))
