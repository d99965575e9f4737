"""The linear probe of the ``linear-probe`` scheme (benchbox/execute/schemes.py): StandardScaler and an
L2-regularised logistic regression on a training fold's frozen features, C chosen from ``C_GRID`` by an
inner cross-validation (log-loss) on that training fold only, patient-grouped and stratified where its
groups allow; then refit on the whole training fold with that C.

``fit_linear_probe_direct`` is the estimator as first written: scikit-learn's GridSearchCV over the
pipeline StandardScaler + LogisticRegression (lbfgs, max_iter 500, tol 1e-4) on all d features.
``fit_linear_probe`` computes the same estimator, an order of magnitude faster on few images with many
features (docs/performance.md, "Encoder zoo"):

- **in the row space.** At the optimum of an L2-penalised logistic regression the weights are a
  combination of the standardised training rows (the penalty's gradient, the weights, is minus C times
  the loss's, which is a combination of the rows). With n training images and d > 2n features it fits
  on the rows' n x n coordinates in an orthonormal basis holding their span (a QR) and maps the
  weights back to the d features (``RowSpace``): the same objective in rotated coordinates. L-BFGS's
  iterates are the same too (from zero they stay in that span, and L-BFGS is invariant to rotating the
  coordinates); only its stopping test reads coordinates (the gradient's largest component must fall
  below tol), so that test is made on the d original coordinates (``FullGradientTest``): it stops at
  the iterate scikit-learn stops at. Each inner split standardises and projects its own training rows,
  as the pipeline does: an inner validation row never shapes the scaler or the basis.
- **scikit-learn's lbfgs objective and solver call, without its per-fit overhead** (``logistic_lbfgs``):
  the mean (class-weighted) log-loss plus 1/(2 C sum-of-weights) times the squared weights, the
  intercept unpenalised, scipy's L-BFGS-B from zero with scikit-learn's options (tol 1e-4, ftol 64 eps,
  maxls 50, maxiter 500); multinomial for 3+ classes, binomial for two. At these sizes its input checks
  cost more than the optimisation.
- **in float64.** The cached features are float32; scikit-learn's lbfgs on float32 input computes its
  loss and gradient in float32, and its tests (ftol = 64 float64 eps) then stop it on rounding noise
  (5 iterations instead of 13 on a ResNet-18 fold at C = 1e-4), which on the encoder zoo changed the
  chosen C in 2 of 100 folds. The features are converted to float64 first, so this computes what
  ``fit_linear_probe_direct`` computes on float64 copies of them: the same C in every fold and the same
  metrics (``benchmarks/encoder_zoo.py --compare-probe``).
- one split's scaler and QR serve all seven C values; BLAS on one thread (the matrices are small: a
  thread pool gains nothing on them, and on a busy machine a 2-thread OpenBLAS was 10-60x slower).
- **the inner splits on the free cores**: where ``--threads`` chose 2 or more threads, the five inner
  splits are scored by that many worker processes (joblib's loky; ``inner_scores``), each computing
  exactly what one process would; the chosen C and the model do not depend on it.

tests/test_schemes.py checks the two against each other.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from benchbox.errors import BenchboxError

#: the inverse regularisation strengths the inner cross-validation chooses from
C_GRID = tuple(float(c) for c in np.logspace(-4, 2, 7))
INNER_FOLDS = 5
MAX_ITER = 500
TOL = 1e-4


def inner_splits(y: np.ndarray, groups: Sequence[str] | None, seed: int) -> tuple[list, str]:
    """The inner cross-validation's splits of a training fold: patient-grouped and stratified when
    the groups allow, else stratified; [] when a class has fewer than 2 images (no choice of C)."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(y)
    counts = counts[counts > 0]
    n = int(min(INNER_FOLDS, counts.min())) if len(counts) > 1 else 0
    if groups is not None:
        n_groups = len(set(groups))
        ng = min(INNER_FOLDS, n_groups, int(counts.min()) if len(counts) > 1 else 0)
        if ng >= 2:
            tests = stratified_group_test_folds(y, groups, ng, seed % (2**31))
            every = np.arange(len(y))
            splits = [(np.setdiff1d(every, test, assume_unique=True), test) for test in tests]
            if all(len(np.unique(y[tr])) == len(counts) for tr, _ in splits):
                return splits, f"{ng}-fold stratified, patient-grouped"
    if n < 2:
        return [], "none (a class has fewer than 2 training images): C = 1"
    splitter = StratifiedKFold(n_splits=n, shuffle=True, random_state=seed % (2**31))
    return list(splitter.split(np.zeros(len(y)), y)), f"{n}-fold stratified"


def stratified_group_test_folds(y: np.ndarray, groups: Sequence[str], n_splits: int, seed: int) -> list[np.ndarray]:
    """The test indices of ``StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)`` on (y, groups),
    computed as scikit-learn computes them, with each group's choice of fold weighed for all folds at once:
    the groups in a seeded random order, then by the spread of their class counts (largest first, stably),
    each to the fold that keeps the class shares across folds most even (ties: the fold with fewer images,
    then the first). scikit-learn weighs one fold at a time in Python, which cost the encoder zoo's warm run
    a tenth of its time; tests/test_schemes.py checks the two give the same folds."""
    _, y_inv, y_count = np.unique(np.asarray(y), return_inverse=True, return_counts=True)
    _, g_inv, g_count = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
    per_group = np.zeros((len(g_count), len(y_count)))
    np.add.at(per_group, (g_inv, y_inv), 1)
    order = np.arange(len(g_count))
    np.random.RandomState(seed).shuffle(order)
    per_group = per_group[order]
    shuffled = np.empty_like(order)
    shuffled[order] = np.arange(len(order))
    g_inv = shuffled[g_inv]
    per_fold = np.zeros((n_splits, len(y_count)))
    fold_of_group = np.empty(len(g_count), dtype=np.int64)
    place = np.eye(n_splits)[:, :, None]  # candidate i adds the group to fold i
    for group in np.argsort(-np.std(per_group, axis=1), kind="stable"):
        trial = (per_fold[None, :, :] + place * per_group[group]) / y_count
        spread = np.std(trial, axis=1).mean(axis=1)
        sizes = per_fold.sum(axis=1)
        best, best_spread, best_size = 0, np.inf, np.inf
        for i in range(n_splits):  # scikit-learn's rule, in its order
            if spread[i] < best_spread or (np.isclose(spread[i], best_spread) and sizes[i] < best_size):
                best, best_spread, best_size = i, spread[i], sizes[i]
        per_fold[best] += per_group[group]
        fold_of_group[group] = best
    fold_of = fold_of_group[g_inv]
    return [np.flatnonzero(fold_of == i) for i in range(n_splits)]


def fit_linear_probe(x: np.ndarray, y: np.ndarray, groups, class_weight: str, seed: int):
    """(the fitted pipeline StandardScaler + LogisticRegression on the d features, facts for the record):
    C by inner CV on this training fold only, computed as the module's docstring says."""
    from sklearn.pipeline import make_pipeline
    from threadpoolctl import threadpool_limits

    if len(np.unique(y)) < 2:
        raise BenchboxError("linear-probe: the training fold holds one class only; nothing to learn")
    balanced = class_weight == "balanced"
    labels = np.unique(y)
    splits, how = inner_splits(y, groups, seed)
    c, processes = 1.0, 1
    if splits:
        scores, processes = inner_scores(x, y, splits, balanced, labels, probe_processes())
        c = float(C_GRID[int(np.argmax(scores.mean(axis=0)))])  # the first best, as GridSearchCV ranks
    with threadpool_limits(limits=1, user_api="blas"):
        space = RowSpace(x)
        fit = logistic_lbfgs(space.rows, y, c, balanced, space.basis)
    model = make_pipeline(space.scaler, fit.estimator(space.basis, x.shape[1], c, balanced))
    info = {"probe_C": c, "probe_C_grid": [float(v) for v in C_GRID], "inner_cv": how, "probe_processes": processes}
    return model, info


def probe_processes() -> int:
    """How many processes score a fold's inner splits: the threads ``--threads`` chose for this run
    (OMP_NUM_THREADS; benchbox/execute/environment.py), since each fit is single-threaded and small, so
    the free cores are used by splitting the work, not a thread pool; on a Ray worker, the CPUs its fold
    asked for (``BENCHBOX_PROBE_PROCESSES``, set by the ray executor); 1 where nothing was chosen."""
    for name in ("BENCHBOX_PROBE_PROCESSES", "OMP_NUM_THREADS"):
        text = os.environ.get(name, "").strip()
        if text.isdigit():
            return max(1, int(text))
    return 1


def inner_scores(x, y, splits, balanced: bool, labels: np.ndarray, processes: int) -> tuple[np.ndarray, int]:
    """(each inner split's ``split_scores``, the processes that computed them). With ``processes`` > 1 the
    splits go to that many joblib (loky) worker processes, kept for the next fold; each computes exactly
    what this process would (the same code, BLAS on one thread), so the chosen C does not depend on it.
    Where worker processes cannot start (a sandbox, no shared memory) or fail, this process computes them."""
    jobs = [(x[tr], y[tr], x[va], y[va], balanced, labels) for tr, va in splits]
    processes = min(processes, len(jobs))
    if processes > 1:
        try:
            from joblib import Parallel, delayed

            scores = Parallel(n_jobs=processes, backend="loky")(delayed(split_scores)(*job) for job in jobs)
            return np.array(scores), processes
        except Exception:  # noqa: BLE001 - computed here instead; a real fault shows there again
            pass
    return np.array([split_scores(*job) for job in jobs]), 1


def split_scores(x_train, y_train, x_held_out, y_held_out, balanced: bool, labels: np.ndarray) -> np.ndarray:
    """Minus the held-out log-loss of each C in ``C_GRID``, fitted on one inner split's training rows (their
    own scaler and basis, as the pipeline fits them); BLAS on one thread."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        inner = RowSpace(x_train)
        held_out = inner.transform(x_held_out)
        scores = np.zeros(len(C_GRID))
        for j, value in enumerate(C_GRID):
            fit = logistic_lbfgs(inner.rows, y_train, value, balanced, inner.basis)
            scores[j] = -mean_log_loss(y_held_out, fit.predict_proba(held_out), fit.classes, labels)
    return scores


def mean_log_loss(y: np.ndarray, proba: np.ndarray, columns: np.ndarray, labels: np.ndarray) -> float:
    """scikit-learn's log_loss(y, proba, labels=labels) (probabilities clipped to [eps, 1 - eps]), without
    its input checks; ``columns``: the label of each column of ``proba``."""
    if len(columns) != len(labels) or (columns != labels).any():  # a class absent from the inner training set
        from sklearn.metrics import log_loss

        return float(log_loss(y, proba, labels=labels))
    eps = np.finfo(proba.dtype).eps
    picked = np.clip(proba, eps, 1 - eps)[np.arange(len(y)), np.searchsorted(columns, y)]
    return float(-np.log(picked).mean())


class RowSpace:
    """A training set's standardised rows in the coordinates of an orthonormal basis of their span, when
    that shrinks them at least twofold (d > 2n); otherwise the standardised rows as they are."""

    def __init__(self, x: np.ndarray):
        from sklearn.preprocessing import StandardScaler

        x = np.asarray(x, dtype=np.float64)  # float32 features: the solver's sums in float64 (module docstring)
        self.scaler = StandardScaler().fit(x)
        z = self.scaler.transform(x)
        self.basis = None  # (d, r)
        self.rows = z
        if z.shape[1] > 2 * z.shape[0]:
            # z.T = Q R: Q's n orthonormal columns span the rows (and, where the rows are dependent, as the
            # standardised ones are, a direction or so more, in which the loss's gradient is zero up to
            # rounding: the weights stay there as they start, at zero), and the rows' coordinates in them are R's columns; a QR costs a third of an SVD
            q, r = np.linalg.qr(z.T)
            self.basis = q
            self.rows = r.T  # = z @ basis

    def transform(self, x: np.ndarray) -> np.ndarray:
        z = self.scaler.transform(np.asarray(x, dtype=np.float64))
        return z if self.basis is None else z @ self.basis


class LogisticFit:
    """A fitted logistic regression in some coordinates: ``coef`` (K, r) (one row for two classes, as
    scikit-learn's binomial), ``intercept`` (K,), the class labels, L-BFGS's iterations."""

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray, n_iter: int):
        self.coef, self.intercept, self.classes, self.n_iter = coef, intercept, classes, n_iter

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        raw = rows @ self.coef.T + self.intercept
        if len(self.classes) == 2:
            p = 1.0 / (1.0 + np.exp(-raw[:, 0]))
            return np.column_stack([1.0 - p, p])
        raw -= raw.max(axis=1, keepdims=True)
        e = np.exp(raw)
        return e / e.sum(axis=1, keepdims=True)

    def estimator(self, basis: np.ndarray | None, d: int, c: float, balanced: bool):
        """A fitted scikit-learn LogisticRegression on the d standardised features (weights mapped back
        from the basis' coordinates), as GridSearchCV's refit would hand over."""
        from sklearn.linear_model import LogisticRegression

        est = LogisticRegression(C=c, max_iter=MAX_ITER, tol=TOL, class_weight="balanced" if balanced else None)
        est.coef_ = self.coef if basis is None else self.coef @ basis.T
        est.intercept_ = self.intercept.copy()
        est.classes_ = self.classes
        est.n_features_in_ = int(d)
        est.n_iter_ = np.array([self.n_iter], dtype=np.int32)
        return est


def logistic_lbfgs(rows: np.ndarray, y: np.ndarray, c: float, balanced: bool, basis: np.ndarray | None = None):
    """scikit-learn's LogisticRegression(C=c, solver="lbfgs", max_iter=500, tol=1e-4[, class_weight=
    "balanced"]).fit(X, y) as its _logistic_regression_path computes it: the same objective, start, solver
    and options (module docstring). ``rows`` are X's rows, or with ``basis`` (d, r) their coordinates
    ``X @ basis`` in an orthonormal basis of their span: then the stopping test is scikit-learn's on X's
    d coordinates (the largest component of the gradient there, ``FullGradientTest``), so L-BFGS stops at
    the iterate it stops at on X. A ``LogisticFit``."""
    from scipy.optimize import minimize

    rows = np.asarray(rows, dtype=np.float64)
    classes, yi = np.unique(y, return_inverse=True)
    n, r = rows.shape
    k = len(classes)
    sw = (n / (k * np.bincount(yi, minlength=k)))[yi] if balanced else np.ones(n)
    total = float(sw.sum())
    l2 = 1.0 / (c * total)
    share = sw / total
    rows1 = np.hstack([rows, np.ones((n, 1))])  # the intercept as a last, unpenalised weight
    seen = np.arange(n)
    if k == 2:
        t = yi.astype(np.float64)

        def loss_gradient(w):
            raw = rows1 @ w
            loss = np.logaddexp(0.0, raw) - t * raw
            g = share * (1.0 / (1.0 + np.exp(-raw)) - t)
            grad = g @ rows1
            grad[:-1] += l2 * w[:-1]
            return float(share @ loss + 0.5 * l2 * (w[:-1] @ w[:-1])), grad

        shape = (1, r + 1)
    else:

        def loss_gradient(w):
            w2 = w.reshape((k, r + 1), order="F")
            raw = rows1 @ w2.T
            top = raw.max(axis=1, keepdims=True)
            e = np.exp(raw - top)
            total_e = e.sum(axis=1, keepdims=True)
            loss = (top + np.log(total_e))[:, 0] - raw[seen, yi]
            p = e / total_e
            p[seen, yi] -= 1.0
            grad = (p * share[:, None]).T @ rows1
            weights = w2[:, :-1]
            grad[:, :-1] += l2 * weights
            return float(share @ loss + 0.5 * l2 * np.vdot(weights, weights)), grad.ravel(order="F")

        shape = (k, r + 1)
    w0 = np.zeros(shape[0] * shape[1])
    options = {"maxiter": MAX_ITER, "maxls": 50, "gtol": TOL, "ftol": 64 * np.finfo(float).eps}

    def as_matrix(w):
        return w[None, :] if k == 2 else w.reshape(shape, order="F")

    if basis is None:
        res = minimize(loss_gradient, w0, method="L-BFGS-B", jac=True, options=options)
        w, nit = as_matrix(res.x), int(res.nit)
    else:
        test = FullGradientTest(loss_gradient, basis, as_matrix)
        if test.done(w0):  # scikit-learn's L-BFGS-B stops before its first step
            w, nit = as_matrix(w0), 0
        else:
            options["gtol"] = 0.0  # the test on the d coordinates decides instead
            res = minimize(test, w0, method="L-BFGS-B", jac=True, options=options, callback=test.callback)
            w, nit = as_matrix(res.x), int(res.nit)
    return LogisticFit(w[:, :-1].copy(), w[:, -1].copy(), classes, nit)


class FullGradientTest:
    """L-BFGS-B's gradient test (its largest component at most ``TOL``) on the d original coordinates, for a
    fit in r rotated ones: the weights' gradient there is ``G @ basis.T`` (the intercepts' is the same).
    Since the basis is orthonormal, a row's largest component lies between its 2-norm / sqrt(d) and its
    2-norm, so the product is formed only when those bounds leave the answer open."""

    def __init__(self, loss_gradient, basis: np.ndarray, as_matrix):
        self.loss_gradient, self.basis, self.as_matrix = loss_gradient, basis, as_matrix
        self.bound = TOL * np.sqrt(len(basis))  # a row 2-norm above it has a component above TOL
        self.last = (None, None)  # (w, gradient) of the last evaluation

    def __call__(self, w):
        f, g = self.loss_gradient(w)
        self.last = (w.copy(), g)
        return f, g

    def done(self, w) -> bool:
        seen, g = self.last
        if seen is None or not np.array_equal(seen, w):
            _, g = self.loss_gradient(w)
        g = self.as_matrix(g)
        if np.abs(g[:, -1]).max() > TOL:  # the intercepts' gradient: the same in both coordinates
            return False
        weights = g[:, :-1]
        norm = np.sqrt((weights * weights).sum(axis=1).max())
        if norm <= TOL:
            return True
        if norm > self.bound:
            return False
        return np.abs(weights @ self.basis.T).max() <= TOL

    def callback(self, intermediate_result):
        if self.done(intermediate_result.x):
            raise StopIteration


def fit_linear_probe_direct(x: np.ndarray, y: np.ndarray, groups, class_weight: str, seed: int):
    """The linear probe as first written: GridSearchCV over StandardScaler + LogisticRegression on all d
    features. ``fit_linear_probe`` computes the same estimator faster; this one is the reference it is
    checked against (tests/test_schemes.py, benchmarks/encoder_zoo.py --compare-probe)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss, make_scorer
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    weight = "balanced" if class_weight == "balanced" else None
    pipe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=500, class_weight=weight))
    splits, how = inner_splits(y, groups, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if len(np.unique(y)) < 2:
            raise BenchboxError("linear-probe: the training fold holds one class only; nothing to learn")
        # log-loss over the fold's classes, also where an inner validation split lacks one of them
        scorer = make_scorer(log_loss, greater_is_better=False, response_method="predict_proba", labels=np.unique(y))
        if splits:
            search = GridSearchCV(
                pipe, {"logisticregression__C": list(C_GRID)}, cv=splits, scoring=scorer, n_jobs=1, refit=True
            )
            search.fit(x, y)
            model, c = search.best_estimator_, float(search.best_params_["logisticregression__C"])
        else:
            model, c = pipe.fit(x, y), 1.0
    info = {"probe_C": c, "probe_C_grid": [float(v) for v in C_GRID], "inner_cv": how, "probe_processes": 1}
    return model, info
