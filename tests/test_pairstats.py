"""Each statistic of benchbox.results.pairstats against an independent computation or a published example.

Tolerances are stated where the reference is itself an estimate (the bootstrap); everything else
is compared to floating-point precision.
"""

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from benchbox.results import pairstats as ps

# ---------------------------------------------------------------------------------------------
# corrected resampled t-test

# 2 x 5-fold CV: ten per-fold accuracy differences, 400 training and 100 test images per fold
D = [0.02, 0.01, 0.03, -0.01, 0.02, 0.00, 0.01, 0.04, 0.02, 0.01]


def test_corrected_ttest_by_hand():
    r = ps.corrected_resampled_ttest(D, n_train=400, n_test=100)
    # mean 0.15 / 10; squared deviations (x 1e-6): 25 25 225 625 25 225 25 625 25 25 = 1850
    mean, var = 0.015, 1850e-6 / 9
    t_hand = mean / math.sqrt((1 / 10 + 100 / 400) * var)  # Bouckaert & Frank: (1/(r k) + n2/n1) s^2
    assert t_hand == pytest.approx(1.76845, abs=1e-4)
    assert r["mean"] == pytest.approx(mean, abs=1e-15)
    assert r["t"] == pytest.approx(t_hand, rel=1e-12)
    assert r["df"] == 9
    assert r["p_value"] == pytest.approx(2 * stats.t.sf(t_hand, 9), rel=1e-12)
    assert 0.1 < r["p_value"] < 0.12  # not significant, where the plain paired t-test says p ~ 0.003


def test_corrected_ttest_differs_from_the_paired_ttest_by_the_correction_only():
    plain = stats.ttest_1samp(D, 0.0)
    r = ps.corrected_resampled_ttest(D, n_train=400, n_test=100)
    # undo the correction: the plain test's variance factor is 1/(r k) instead of 1/(r k) + n2/n1
    assert r["t"] * math.sqrt((1 / 10 + 100 / 400) / (1 / 10)) == pytest.approx(plain.statistic, rel=1e-12)
    assert plain.pvalue < 0.01 < r["p_value"]
    # the correction grows with the test/train ratio, and vanishes as it does
    nearly_plain = ps.corrected_resampled_ttest(D, n_train=1e12, n_test=1)
    assert nearly_plain["t"] == pytest.approx(plain.statistic, rel=1e-9)
    assert nearly_plain["p_value"] == pytest.approx(plain.pvalue, rel=1e-6)


def test_corrected_ttest_uses_mean_fold_sizes_and_signs():
    r = ps.corrected_resampled_ttest([-x for x in D], n_train=[390, 410] * 5, n_test=[110, 90] * 5)
    assert r["t"] == pytest.approx(-ps.corrected_resampled_ttest(D, 400, 100)["t"], rel=1e-12)


def test_corrected_ttest_degenerate_and_bad_input():
    assert ps.corrected_resampled_ttest([0.0] * 5, 80, 20)["p_value"] == 1.0
    certain = ps.corrected_resampled_ttest([0.01] * 5, 80, 20)
    assert certain["p_value"] == 0.0 and certain["t"] == math.inf
    with pytest.raises(ValueError, match="at least 2"):
        ps.corrected_resampled_ttest([0.1], 80, 20)
    with pytest.raises(ValueError, match="nan"):
        ps.corrected_resampled_ttest([0.1, float("nan")], 80, 20)
    with pytest.raises(ValueError, match="positive"):
        ps.corrected_resampled_ttest([0.1, 0.2], 0, 20)


# ---------------------------------------------------------------------------------------------
# DeLong


def correlated_scores(seed=0, m=120, n=180):
    """Two classifiers' scores on the same images, correlated through a shared per-image term."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(m, bool), np.zeros(n, bool)]
    shared = rng.normal(size=m + n)
    a = 1.0 * y + shared + 0.6 * rng.normal(size=m + n)
    b = 0.7 * y + shared + 0.9 * rng.normal(size=m + n)
    # rounding makes ties, which DeLong's midranks must handle like the Mann-Whitney kernel
    return y, np.round(a, 1), np.round(b, 1)


def kernel(scores, y):
    """psi(X_i, Y_j) = 1, 1/2, 0 for every positive i and negative j: the AUC's U-statistic kernel."""
    pos, neg = scores[y][:, None], scores[~y][None, :]
    return (pos > neg) + 0.5 * (pos == neg)


def test_delong_auc_equals_sklearn_with_ties():
    y, a, b = correlated_scores()
    assert len(np.unique(a)) < len(a)  # ties present
    for s in (a, b):
        assert ps.delong_auc(y, s)["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    r = ps.delong_test(y, a, b)
    assert r["auc_a"] == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert r["auc_b"] == pytest.approx(roc_auc_score(y, b), abs=1e-12)
    assert r["difference"] == pytest.approx(r["auc_a"] - r["auc_b"], abs=1e-15)


def test_delong_se_matches_a_paired_bootstrap():
    y, a, b = correlated_scores()
    ka, kb = kernel(a, y), kernel(b, y)
    m, n = ka.shape
    rng = np.random.default_rng(12345)
    diffs, aucs_a = [], []
    for _ in range(2000):  # stratified: positives and negatives resampled apart (DeLong fixes m and n)
        i, j = rng.integers(0, m, m), rng.integers(0, n, n)
        auc_a, auc_b = ka[np.ix_(i, j)].mean(), kb[np.ix_(i, j)].mean()
        diffs.append(auc_a - auc_b)
        aucs_a.append(auc_a)
    boot_se, boot_se_a = float(np.std(diffs, ddof=1)), float(np.std(aucs_a, ddof=1))
    r = ps.delong_test(y, a, b)
    # 2000 resamples estimate an SE to ~2%; 10% leaves room for the bootstrap's own bias
    assert r["se"] == pytest.approx(boot_se, rel=0.10)
    assert ps.delong_auc(y, a)["se"] == pytest.approx(boot_se_a, rel=0.10)
    # the covariance of the two AUCs matters here: ignoring it would miss the bootstrap by far
    se_independent = math.hypot(ps.delong_auc(y, a)["se"], ps.delong_auc(y, b)["se"])
    assert abs(se_independent - boot_se) / boot_se > 0.3
    assert r["z"] == pytest.approx(r["difference"] / r["se"])
    assert r["p_value"] == pytest.approx(2 * stats.norm.sf(abs(r["z"])))
    assert r["p_value"] < 0.05  # a clear difference on 300 images


def test_delong_identical_scores_and_bad_input():
    y, a, _ = correlated_scores()
    same = ps.delong_test(y, a, a)
    assert (same["difference"], same["z"], same["p_value"]) == (0.0, 0.0, 1.0)
    swapped = ps.delong_test(y.astype(int), *correlated_scores()[1:][::-1])
    assert swapped["z"] == pytest.approx(-ps.delong_test(y, *correlated_scores()[1:])["z"])
    with pytest.raises(ValueError, match="2 positive and 2 negative"):
        ps.delong_test([1, 0, 0], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])
    with pytest.raises(ValueError, match="same images"):
        ps.delong_test([1, 1, 0, 0], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1, 0.0])
    with pytest.raises(ValueError, match="y_true == positive_index"):
        ps.delong_test([0, 1, 2, 2, 0], [0.1] * 5, [0.2] * 5)


# ---------------------------------------------------------------------------------------------
# McNemar, Holm


def test_mcnemar_exact_on_a_contingency_table():
    # both right 50, only A right 3, only B right 12, both wrong 35
    a = np.r_[np.ones(50), np.ones(3), np.zeros(12), np.zeros(35)].astype(bool)
    b = np.r_[np.ones(50), np.zeros(3), np.ones(12), np.zeros(35)].astype(bool)
    r = ps.mcnemar_exact(a, b)
    assert (r["only_a"], r["only_b"], r["discordant"]) == (3, 12, 15)
    assert r["p_value"] == pytest.approx(stats.binomtest(3, 15, 0.5).pvalue, rel=1e-12)
    # by hand: 2 * (C(15,0) + C(15,1) + C(15,2) + C(15,3)) / 2^15 = 2 * 576 / 32768
    assert r["p_value"] == pytest.approx(2 * 576 / 32768, rel=1e-12)
    assert ps.mcnemar_exact(b, a)["p_value"] == pytest.approx(r["p_value"])
    assert ps.mcnemar_exact(a, a)["p_value"] == 1.0
    with pytest.raises(ValueError, match="same images"):
        ps.mcnemar_exact(a, b[:-1])


def test_holm_worked_example():
    adjusted = ps.holm([0.01, 0.04, 0.03, 0.005])
    # sorted: 0.005 x 4 = 0.02; 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04 -> 0.06 (monotone)
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)


def test_holm_caps_at_one_keeps_nan_and_is_monotone():
    adjusted = ps.holm([0.5, float("nan"), 0.2, 0.01])
    assert math.isnan(adjusted[1])
    assert adjusted[[0, 2, 3]] == pytest.approx([min(1, 0.5), 0.4, 0.03])  # m = 3: the nan does not count
    rng = np.random.default_rng(1)
    p = rng.uniform(size=30)
    adj = ps.holm(p)
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= 0) and np.all(adj >= p) and adj.max() <= 1
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ps.holm([0.5, 1.5])


# ---------------------------------------------------------------------------------------------
# Friedman, Nemenyi


def test_friedman_equals_scipy_with_ties():
    rng = np.random.default_rng(7)
    scores = rng.integers(0, 4, size=(12, 5)).astype(float)  # many ties within rows
    scores[:, 2] += 1.5  # one clearly better entry
    r = ps.friedman(scores)
    ref = stats.friedmanchisquare(*scores.T)
    assert r["chi2"] == pytest.approx(ref.statistic, rel=1e-12)
    assert r["p_value"] == pytest.approx(ref.pvalue, rel=1e-10)
    assert int(np.argmin(r["ranks"])) == 2  # rank 1 is best
    assert r["ranks"].sum() == pytest.approx(5 * 6 / 2)


def test_friedman_lower_is_better_reverses_ranks():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(6, 4))
    assert ps.friedman(scores, higher_is_better=False)["ranks"] == pytest.approx(5 - ps.friedman(scores)["ranks"])
    assert ps.friedman(scores)["chi2"] == pytest.approx(stats.friedmanchisquare(*scores.T).statistic)
    with pytest.raises(ValueError, match="at least 3 entries"):
        ps.friedman(scores[:, :2])


def test_iman_davenport_and_cd_from_demsar():
    # Demšar (2006), section 3.2.2: four C4.5 variants on 14 data sets, chi2_F = 9.28 -> F_F = 3.69
    assert ps.iman_davenport(9.28, 14, 4) == pytest.approx(3.69, abs=0.005)
    # q_0.05 = 2.569 for k = 4: CD = 2.569 sqrt(4 * 5 / (6 * 14)) = 1.25
    assert ps.nemenyi_cd(4, 14) == pytest.approx(1.25, abs=0.005)
    assert ps.nemenyi_cd(4, 14, alpha=0.10) == pytest.approx(1.12, abs=0.005)  # q_0.10 = 2.291


def test_nemenyi_table_is_the_studentized_range():
    for alpha, table in ps.NEMENYI_Q.items():
        for k, q in table.items():
            assert q == pytest.approx(stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2), abs=1.5e-3)
    # beyond the table: computed the same way
    assert ps.nemenyi_q(12) == pytest.approx(stats.studentized_range.ppf(0.95, 12, np.inf) / math.sqrt(2))


def test_cd_cliques_on_demsars_example():
    names = ["C4.5", "C4.5+m", "C4.5+cf", "C4.5+m+cf"]
    ranks = [3.143, 2.000, 2.893, 1.964]
    # alpha = 0.05: 3.143 - 1.964 = 1.179 < 1.25, nothing differs: one group of all four
    assert ps.cd_cliques(names, ranks, ps.nemenyi_cd(4, 14)) == [["C4.5+m+cf", "C4.5+m", "C4.5+cf", "C4.5"]]
    # alpha = 0.10 (CD 1.12): C4.5+m+cf beats C4.5 (Demšar's conclusion), two overlapping groups
    assert ps.cd_cliques(names, ranks, ps.nemenyi_cd(4, 14, alpha=0.10)) == [
        ["C4.5+m+cf", "C4.5+m", "C4.5+cf"],
        ["C4.5+cf", "C4.5"],
    ]
    assert ps.cd_cliques(["a", "b", "c"], [1.0, 2.0, 3.0], 0.5) == []


# ---------------------------------------------------------------------------------------------
# calibration


def test_brier_by_hand():
    y = [0, 1]
    p = [[0.8, 0.1, 0.1], [0.3, 0.6, 0.1]]
    # (0.2^2 + 0.1^2 + 0.1^2) = 0.06 and (0.3^2 + 0.4^2 + 0.1^2) = 0.26; mean 0.16
    assert ps.brier_score(y, p) == pytest.approx(0.16, abs=1e-15)
    assert ps.brier_score([2], [[1.0, 0.0, 0.0]]) == pytest.approx(2.0)
    assert ps.brier_score([2], [[0.0, 0.0, 1.0]]) == 0.0
    with pytest.raises(ValueError, match="one row per label"):
        ps.brier_score([0, 1, 1], p)
    with pytest.raises(ValueError, match="index"):
        ps.brier_score([0, 3], p)


def test_ece_and_bins_by_hand():
    y = [0, 1, 2, 0]
    p = [
        [0.90, 0.05, 0.05],  # conf 0.90, right -> bin (13/15, 14/15]
        [0.90, 0.05, 0.05],  # conf 0.90, wrong -> same bin
        [0.21, 0.21, 0.58],  # conf 0.58, right -> bin (8/15, 9/15]
        [0.20, 0.55, 0.25],  # conf 0.55, wrong -> same bin
    ]
    bins = ps.reliability_bins(y, p)
    assert len(bins) == 15
    assert [b["count"] for b in bins] == [0] * 8 + [2] + [0] * 4 + [2, 0]
    assert bins[8]["confidence"] == pytest.approx(0.565) and bins[8]["accuracy"] == 0.5
    assert bins[13]["confidence"] == pytest.approx(0.9) and bins[13]["accuracy"] == 0.5
    assert math.isnan(bins[0]["accuracy"])
    # (2/4)|0.5 - 0.9| + (2/4)|0.5 - 0.565| = 0.2 + 0.0325
    assert ps.expected_calibration_error(y, p) == pytest.approx(0.2325, abs=1e-12)


def test_ece_edges_and_perfect_confidence():
    assert ps.expected_calibration_error([0, 1], [[1.0, 0.0], [0.0, 1.0]]) == 0.0  # conf 1.0: last bin
    assert ps.reliability_bins([0], [[1.0, 0.0]])[-1]["count"] == 1
    assert ps.expected_calibration_error([1, 1], [[1.0, 0.0], [1.0, 0.0]]) == 1.0
    assert math.isnan(ps.expected_calibration_error([], np.zeros((0, 2))))


@pytest.mark.parametrize("n, distinct", [(0, 2), (1, 2), (7, 2), (60, 5), (500, 1000)])
def test_midranks_are_scipys_average_ranks_ties_included(n, distinct):
    from benchbox.results.statistics import midranks, positive_auc

    rng = np.random.default_rng(n)
    x = rng.integers(0, distinct, n) / distinct  # few distinct values: many ties
    assert np.array_equal(midranks(x), stats.rankdata(x))
    if n > 2:
        y = np.r_[0, 1, rng.integers(0, 2, n - 2)]
        proba = np.column_stack([1 - x, x])
        assert positive_auc(y, proba, 1) == pytest.approx(roc_auc_score(y, x), abs=1e-12)


@pytest.mark.parametrize("n, distinct", [(2, 2), (9, 3), (200, 7), (300, 10**6)])
def test_roc_points_are_scikit_learns_curve(n, distinct):
    from sklearn.metrics import roc_curve

    from benchbox.results.statistics import roc_points

    rng = np.random.default_rng(distinct)
    y = np.r_[False, True, rng.integers(0, 2, n - 2).astype(bool)]
    score = rng.integers(0, distinct, n) / distinct
    fpr, tpr = roc_points(y, score)
    want_fpr, want_tpr, _ = roc_curve(y, score, drop_intermediate=False)
    np.testing.assert_allclose(fpr, want_fpr, rtol=0, atol=1e-15)
    np.testing.assert_allclose(tpr, want_tpr, rtol=0, atol=1e-15)


@pytest.mark.parametrize("only_a, only_b", [(0, 1), (3, 9), (12, 12), (0, 24), (10, 15), (40, 90), (5, 200)])
def test_mcnemar_p_values_are_scipys_distributions(only_a, only_b):
    from benchbox.results.statistics import mcnemar

    a = np.r_[np.ones(only_a, bool), np.zeros(only_b, bool), np.ones(7, bool)]
    b = np.r_[np.zeros(only_a, bool), np.ones(only_b, bool), np.ones(7, bool)]
    got = mcnemar(a, b)
    n = only_a + only_b
    if n < 25:
        want = min(1.0, 2 * stats.binom.cdf(min(only_a, only_b), n, 0.5))
    else:
        want = stats.chi2.sf((abs(only_a - only_b) - 1) ** 2 / n, 1)
    assert got["p_value"] == pytest.approx(want, rel=1e-12, abs=1e-300)
