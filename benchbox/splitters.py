"""Seeded fold assignment, in the spirit of scikit-learn's model_selection splitters.

A split is a plain integer array: ``fold[i]`` is the test fold of sample ``i`` (holdout: 0 for
test, -1 for train-only). Every backbone of a dataset sees the same folds, so their predictions
can be compared sample by sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchbox.errors import BenchboxError


@dataclass(frozen=True)
class Protocol:
    """How samples are split: k-fold (stratified and/or patient-grouped) or one holdout.

    ``cross-dataset`` splits each data set as k-fold does (its within-data-set figures) and, besides,
    has every cell's models predict every other data set of the suite; with ``refit`` one more model
    per cell, trained on all of its data set, makes those cross-dataset predictions."""

    kind: str = "kfold"  # "kfold" | "holdout" | "cross-dataset"
    k: int = 10
    stratified: bool = True
    grouped: bool = False
    test_fraction: float = 0.2
    refit: bool = False  # cross-dataset only: one extra model per cell, trained on the whole data set

    @property
    def label(self) -> str:
        how = "+".join(x for x, on in (("stratified", self.stratified), ("grouped", self.grouped)) if on)
        if self.kind == "holdout":
            return f"holdout {self.test_fraction:g}" + (f" ({how})" if how else "")
        within = f"{self.k}-fold" + (f" ({how})" if how else "")
        if self.kind == "cross-dataset":
            return f"cross-dataset, {within} within" + (", refit on all for external" if self.refit else "")
        return within

    @property
    def n_folds(self) -> int:
        """Cross-validation folds per cell (the refit model of a cross-dataset run is not one)."""
        return 1 if self.kind == "holdout" else self.k

    @property
    def refit_fold(self) -> int | None:
        """The fold number a cell's refit model (trained on all of its data set) is stored under."""
        return self.k if self.kind == "cross-dataset" and self.refit else None

    @property
    def units_per_cell(self) -> int:
        """Models trained per cell: the folds, and the refit model if there is one."""
        return self.n_folds + (self.refit_fold is not None)


def assign_folds(protocol: Protocol, labels, groups, seed: int) -> np.ndarray:
    """Return the test-fold number of each sample; raise a BenchboxError when impossible."""
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    n = len(labels)
    placeholder = np.zeros(n)
    if protocol.kind == "holdout":
        return _holdout(protocol, labels, groups, seed)
    k = protocol.k
    if protocol.grouped and len(np.unique(groups)) < k:
        raise BenchboxError(
            f"protocol: {k}-fold grouped CV needs at least {k} patients, "
            f"the data set has {len(np.unique(groups))}; lower protocol.k"
        )
    if protocol.stratified:
        smallest = np.bincount(np.unique(labels, return_inverse=True)[1]).min()
        if smallest < k:
            raise BenchboxError(
                f"protocol: stratified {k}-fold CV needs at least {k} images per "
                f"class, the smallest class has {smallest}; lower protocol.k"
            )
    # scikit-learn is imported here, not at the top: it would double the start-up time of every command
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    if protocol.grouped and protocol.stratified:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    elif protocol.grouped:
        # GroupKFold has no shuffling in older scikit-learn: permute group ids with the seed instead.
        uniq, inv = np.unique(groups, return_inverse=True)
        perm = np.random.default_rng(seed).permutation(len(uniq))
        groups = perm[inv]
        splitter = GroupKFold(n_splits=k)
    elif protocol.stratified:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    else:
        splitter = KFold(n_splits=k, shuffle=True, random_state=seed)
    fold = np.full(n, -1, dtype=np.int64)
    split_groups = groups if protocol.grouped else None
    for f, (_, test) in enumerate(splitter.split(placeholder, labels, split_groups)):
        fold[test] = f
    return fold


def _holdout(protocol: Protocol, labels, groups, seed: int) -> np.ndarray:
    from sklearn.model_selection import GroupShuffleSplit, train_test_split

    n = len(labels)
    idx = np.arange(n)
    if protocol.grouped:
        gss = GroupShuffleSplit(n_splits=1, test_size=protocol.test_fraction, random_state=seed)
        _, test = next(gss.split(idx, labels, groups))
    else:
        _, test = train_test_split(
            idx, test_size=protocol.test_fraction, random_state=seed, stratify=labels if protocol.stratified else None
        )
    fold = np.full(n, -1, dtype=np.int64)
    fold[test] = 0
    return fold


def train_test_indices(fold_of: np.ndarray, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and test samples of one fold."""
    return np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
