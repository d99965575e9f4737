"""The first-party split strategies: ``kfold``, ``holdout`` and ``cross-dataset`` (docs/suites.md).

Each is one small object behind one ``assign`` call, in the spirit of scikit-learn's model_selection
splitters (whose classes do the drawing): a suite's ``[protocol] kind`` picks one by name, and the
strategy checks its own options. A split is a plain integer array: ``fold[i]`` is the test fold of
sample ``i`` (holdout: 0 for test, -1 for train-only). Repeated cross-validation (``repeats = r``)
returns one such row per repeat, an ``(r, n)`` array whose repeat ``j`` holds folds ``j*k .. j*k+k-1``.
Every backbone of a data set sees the same folds, so their predictions can be compared sample by sample.
"""

from __future__ import annotations

import numpy as np

from benchbox import hookimpl
from benchbox.contracts import SplitStrategy
from benchbox.errors import BenchboxError


class _StratifiedGrouped(SplitStrategy):
    """A strategy with ``stratified`` and ``grouped`` options, named "WHAT (stratified+grouped)"."""

    def what(self, options) -> str:
        raise NotImplementedError

    def label(self, options) -> str:
        how = "+".join(x for x in ("stratified", "grouped") if options.get(x))
        return self.what(options) + (f" ({how})" if how else "")


class KFold(_StratifiedGrouped):
    """k folds, stratified by class and/or grouped by patient (no patient in two folds); with
    ``repeats = r``, r such splits, each drawn with its own seed (``repeat_seed``), numbered
    ``repeat * k + fold``."""

    name = "kfold"
    description = "k-fold cross-validation (repeated r times), stratified by class and/or grouped by patient"
    defaults = {"k": 10, "stratified": True, "grouped": False, "repeats": 1}

    def check_options(self, options) -> list[str]:
        k, repeats = options.get("k", 10), options.get("repeats", 1)
        problems = [f"k: must be at least 2, got {k}"] if isinstance(k, int) and k < 2 else []
        if isinstance(repeats, int) and not 1 <= repeats <= MAX_REPEATS:
            problems.append(
                f"repeats: must be between 1 and {MAX_REPEATS} (each repeat is k more models per cell), got {repeats}"
            )
        return problems

    def n_folds(self, options) -> int:
        return options["k"] * options.get("repeats", 1)

    def repeats(self, options) -> int:
        return int(options.get("repeats", 1))

    def what(self, options) -> str:
        r = options.get("repeats", 1)
        # one repeat keeps the label (and so the split fingerprints) runs made before repeats existed have
        return (f"{r}x" if r > 1 else "") + f"{options['k']}-fold"

    def assign(self, options, labels, groups, sources, seed) -> np.ndarray:
        k, r = options["k"], options.get("repeats", 1)
        rows = [
            kfold(k, options["stratified"], options["grouped"], labels, groups, repeat_seed(seed, j)) + j * k
            for j in range(r)
        ]
        return rows[0] if r == 1 else np.stack(rows)


class Holdout(_StratifiedGrouped):
    """One seeded train/test split; its one "fold" is the test part."""

    name = "holdout"
    description = "one seeded train/test split (test_fraction of the images, or of the patients when grouped)"
    defaults = {"test_fraction": 0.2, "stratified": True, "grouped": False}

    def check_options(self, options) -> list[str]:
        frac = options.get("test_fraction", 0.2)
        return [f"test_fraction: must be between 0 and 1, got {frac}"] if not 0 < frac < 1 else []

    def n_folds(self, options) -> int:
        return 1

    def what(self, options) -> str:
        return f"holdout {options['test_fraction']:g}"

    def assign(self, options, labels, groups, sources, seed) -> np.ndarray:
        from sklearn.model_selection import GroupShuffleSplit, train_test_split

        n = len(labels)
        idx = np.arange(n)
        if options["grouped"]:
            gss = GroupShuffleSplit(n_splits=1, test_size=options["test_fraction"], random_state=seed)
            _, test = next(gss.split(idx, labels, groups))
        else:
            stratify = labels if options["stratified"] else None
            _, test = train_test_split(idx, test_size=options["test_fraction"], random_state=seed, stratify=stratify)
        fold = np.full(n, -1, dtype=np.int64)
        fold[test] = 0
        return fold


class CrossDataset(KFold):
    """k folds within each data set (its within-data-set figures, exactly as ``kfold``), and every cell's
    models also predict every other data set of the suite; with ``refit`` one more model per cell,
    trained on all of its data set, makes those cross-dataset predictions."""

    name = "cross-dataset"
    description = "k-fold within each data set, and every model tested on the suite's other data sets"
    defaults = {**KFold.defaults, "refit": False}
    crosses_datasets = True
    #: the positive class against the rest, as the study's readers ask of a model moved to another site;
    #: ``clinical`` is used for the matrix even when the suite lists ``paper`` alone (the report says so)
    matrix_metrics = {"auc": "clinical", "sensitivity": "paper", "specificity": "paper"}

    def label(self, options) -> str:
        within = super().label(options)
        return f"cross-dataset, {within} within" + (", refit on all for external" if options.get("refit") else "")

    def within_label(self, options) -> str:
        return super().label(options)

    def refit(self, options) -> bool:
        return bool(options.get("refit"))


#: repeated cross-validation: at most this many repeats (10 x 10 folds is the usual ceiling in the literature)
MAX_REPEATS = 100


def repeat_seed(seed: int, repeat: int) -> int:
    """The seed of repeat ``repeat`` of a repeated k-fold split: the suite's seed for the first (so one
    repeat draws exactly the folds a plain k-fold does), then one derived from (seed, repeat)."""
    if repeat == 0:
        return seed
    return int(np.random.SeedSequence([seed, repeat]).generate_state(1)[0] % (2**31 - 1))


def kfold(k: int, stratified: bool, grouped: bool, labels, groups, seed: int) -> np.ndarray:
    """The test fold of each sample under k-fold CV; a BenchboxError naming ``protocol.k`` when impossible."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    n = len(labels)
    if grouped and len(np.unique(groups)) < k:
        raise BenchboxError(
            f"protocol: {k}-fold grouped CV needs at least {k} patients, "
            f"the data set has {len(np.unique(groups))}; lower protocol.k"
        )
    if stratified:
        smallest = np.bincount(np.unique(labels, return_inverse=True)[1]).min()
        if smallest < k:
            raise BenchboxError(
                f"protocol: stratified {k}-fold CV needs at least {k} images per "
                f"class, the smallest class has {smallest}; lower protocol.k"
            )
    # scikit-learn is imported here, not at the top: it would double the start-up time of every command
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    if grouped and stratified:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    elif grouped:
        # GroupKFold has no shuffling in older scikit-learn: permute group ids with the seed instead.
        uniq, inv = np.unique(groups, return_inverse=True)
        perm = np.random.default_rng(seed).permutation(len(uniq))
        groups = perm[inv]
        splitter = GroupKFold(n_splits=k)
    elif stratified:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    else:
        splitter = KFold(n_splits=k, shuffle=True, random_state=seed)
    fold = np.full(n, -1, dtype=np.int64)
    for f, (_, test) in enumerate(splitter.split(np.zeros(n), labels, groups if grouped else None)):
        fold[test] = f
    return fold


@hookimpl
def benchbox_split_strategies():
    return [KFold(), Holdout(), CrossDataset()]
