"""The few rates the validity checks need, computed from fold records alone (whatever evaluators
a run used): accuracy over all classes, and sensitivity/specificity of the positive class, each
with its hits, total and Wilson 95% interval. Numbers, formatted only when a table is drawn."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchbox.results.statistics import wilson


@dataclass(frozen=True)
class Rate:
    hits: int
    n: int

    @property
    def value(self) -> float:
        return self.hits / self.n if self.n else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.hits, self.n)

    @property
    def points(self) -> float:
        """The rate in percentage points (nan when undefined)."""
        return 100 * self.value

    def text(self, counts: bool = False) -> str:
        if not self.n:
            return "n/a"
        lo, hi = self.interval
        return f"{100 * self.value:.1f} [{100 * lo:.1f}–{100 * hi:.1f}]" + (
            f" ({self.hits}/{self.n})" if counts else ""
        )


@dataclass(frozen=True)
class Rates:
    accuracy: Rate
    sensitivity: Rate
    specificity: Rate


def rates(y_true, y_pred, positive: int) -> Rates:
    y, p = np.asarray(y_true), np.asarray(y_pred)
    pos, neg = y == positive, y != positive
    return Rates(
        Rate(int((y == p).sum()), len(y)),
        Rate(int((p[pos] == positive).sum()), int(pos.sum())),
        Rate(int((p[neg] != positive).sum()), int(neg.sum())),
    )


def cell_rates(records, positive_class: str) -> Rates:
    classes = list(records[0].classes)
    pos = classes.index(positive_class) if positive_class in classes else 0
    y = np.concatenate([r.y_true for r in records])
    p = np.concatenate([r.predicted for r in records])
    return rates(y, p, pos)
