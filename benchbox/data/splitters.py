"""A run's protocol as a plain value: the suite's ``[protocol]`` table, and the registered split
strategy (``benchbox.contracts.SplitStrategy``) that its ``kind`` names.

The strategies themselves are plugins (the first-party ones in plugins/benchbox_splits); this module
only checks what a strategy returns. A split is a plain integer array: ``fold[i]`` is the test fold
of sample ``i`` (-1: train only). Every backbone of a data set sees the same folds, so their
predictions can be compared sample by sample.
"""

from __future__ import annotations

import numpy as np

from benchbox.contracts import Chosen, SplitStrategy
from benchbox.errors import BenchboxError


class Protocol(Chosen):
    """How samples are split: the strategy's name (``kind``), its options (defaults merged) and the
    strategy itself, looked up in the registry when the suite was read."""

    @property
    def kind(self) -> str:
        return self.name

    @property
    def strategy(self) -> SplitStrategy:
        return self.plugin

    @property
    def within_label(self) -> str:
        return self.strategy.within_label(self.options)

    @property
    def n_folds(self) -> int | None:
        """The folds it draws, where the options alone say; None when the data decide (e.g. one per source)."""
        return self.strategy.n_folds(self.options)

    @property
    def crosses_datasets(self) -> bool:
        return bool(self.strategy.crosses_datasets)

    @property
    def refit(self) -> bool:
        """Whether each cell also trains one model on all of its data set (stored as fold ``n_folds``)."""
        return bool(self.strategy.refit(self.options))

    def as_dict(self) -> dict:
        """The stored form (manifest.json): ``kind`` and every option."""
        return {"kind": self.kind, **self.options}

    def assign(self, labels, groups, sources, seed: int) -> np.ndarray:
        """The strategy's folds, checked: one int per sample, every fold 0..n-1 holding test samples."""
        labels = np.asarray(labels)
        fold = self.strategy.assign(self.options, labels, np.asarray(groups), np.asarray(sources), seed)
        return checked_folds(fold, len(labels), self.kind)


def checked_folds(fold, n: int, kind: str) -> np.ndarray:
    """A strategy's output as int64, or a BenchboxError naming the strategy (a plugin's bug, not the user's)."""
    fold = np.asarray(fold)
    if fold.shape != (n,) or not np.issubdtype(fold.dtype, np.integer):
        raise BenchboxError(
            f"split strategy {kind!r} returned {fold.dtype} {fold.shape}; expected one integer per sample ({n})"
        )
    fold = fold.astype(np.int64)
    used = np.unique(fold[fold >= 0])
    if fold.min(initial=0) < -1 or not len(used) or not np.array_equal(used, np.arange(len(used))):
        raise BenchboxError(
            f"split strategy {kind!r} returned folds {sorted(set(fold.tolist()))[:10]}; expected test folds "
            "0, 1, ... each with samples (and -1 for train-only samples)"
        )
    return fold


def fold_count(fold_of: np.ndarray) -> int:
    """Cross-validation folds of a split (a refit model is not one)."""
    return int(np.max(fold_of)) + 1 if len(fold_of) else 0


def train_test_indices(fold_of: np.ndarray, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and test samples of one fold."""
    return np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
