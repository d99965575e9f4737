"""Executors: who trains the units of work (cell x fold) of a run, chosen by name.

The executors themselves are plugins (``benchbox.contracts.Executor``; ``local`` and ``ray`` in
plugins/benchbox_executors). This module holds what they share: the chosen executor as a plain value
(name, options, the plugin) and ``build_job``, which makes a unit's FoldJob from the shared arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from benchbox.contracts import Chosen, FoldJob
from benchbox.define.plan import Unit
from benchbox.errors import BenchboxError


class ExecutorChoice(Chosen):
    """The executor a run uses: its name, its options (defaults merged) and the plugin object."""

    def run(self, units, images: dict, externals: dict, on_done, on_failed, reporter, registry) -> None:
        self.plugin.run(units, images, externals, on_done, on_failed, reporter, self.options, registry)


def choose_executor(registry, settings: Mapping[str, Any] | None = None) -> ExecutorChoice:
    """The executor ``settings`` (an [executor] table with command-line overrides) names, its options
    checked by the suite's rules; a BenchboxError listing every problem."""
    from benchbox.define.suite import DEFAULT_EXECUTOR, chosen_strategy

    problems: list[str] = []
    executor, options = chosen_strategy(problems, "executor", dict(settings or {}), registry, DEFAULT_EXECUTOR)
    if problems or executor is None:
        raise BenchboxError("; ".join(problems) + " (command-line options override the suite's [executor] table)")
    return ExecutorChoice(executor.name, options, executor)


def build_job(unit: Unit, images: np.ndarray, test_images: np.ndarray, progress=None) -> FoldJob:
    f = unit.job_fields
    return FoldJob(
        x_train=images[unit.train_idx],
        y_train=f["y_train"],
        x_test=test_images[unit.test_idx],
        num_classes=f["num_classes"],
        options=f["options"],
        training=f["training"],
        seed=f["seed"],
        progress=progress,
        train_ids=f["train_ids"],
        test_ids=f["test_ids"],
        inspect=f.get("inspect"),
        train_groups=f.get("train_groups"),
    )
