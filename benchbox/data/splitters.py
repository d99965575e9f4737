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
    def repeats(self) -> int:
        """Repeats of a repeated cross-validation (1: a plain split)."""
        return int(self.strategy.repeats(self.options))

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
    """A strategy's output as int64, or a BenchboxError naming the strategy (a plugin's bug, not the user's).

    One integer per sample (shape ``(n,)``), or for repeated cross-validation one row per repeat
    (shape ``(r, n)``), each row its own split whose fold numbers no other row uses."""
    fold = np.asarray(fold)
    if fold.ndim not in (1, 2) or fold.shape[-1] != n or not np.issubdtype(fold.dtype, np.integer) or not fold.size:
        raise BenchboxError(
            f"split strategy {kind!r} returned {fold.dtype} {fold.shape}; expected one integer per sample ({n}), "
            f"or one row of them per repeat (r, {n})"
        )
    fold = fold.astype(np.int64)
    used = np.unique(fold[fold >= 0])
    rows = fold.reshape(-1, n)
    shared = len(rows) > 1 and sum(len(np.unique(r[r >= 0])) for r in rows) != len(used)
    if fold.min(initial=0) < -1 or not len(used) or not np.array_equal(used, np.arange(len(used))) or shared:
        raise BenchboxError(
            f"split strategy {kind!r} returned folds {sorted(set(fold.ravel().tolist()))[:10]}; expected test folds "
            "0, 1, ... each with samples (and -1 for train-only samples)"
            + ("; each repeat's row its own fold numbers" if len(rows) > 1 else "")
        )
    return fold


def fold_count(fold_of: np.ndarray) -> int:
    """Cross-validation folds of a split, every repeat's (a refit model is not one)."""
    fold_of = np.asarray(fold_of)
    return int(np.max(fold_of)) + 1 if fold_of.size else 0


def repeat_rows(fold_of: np.ndarray) -> np.ndarray:
    """A split as one row per repeat: ``(1, n)`` for a plain split, ``(r, n)`` for repeated CV."""
    fold_of = np.asarray(fold_of)
    return fold_of.reshape(-1, fold_of.shape[-1]) if fold_of.size else fold_of.reshape(1, 0)


def train_test_indices(fold_of: np.ndarray, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and test samples of one fold (of the repeat that holds it)."""
    rows = repeat_rows(fold_of)
    holding = np.flatnonzero((rows == fold).any(axis=1))
    row = rows[holding[0]] if len(holding) else rows[0]
    return np.flatnonzero(row != fold), np.flatnonzero(row == fold)
