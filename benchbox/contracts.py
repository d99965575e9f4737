"""The plain values that flow between stages, and the three plugin interfaces.

Everything here is framework-free: a test can build any of these values by hand.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

SAMPLE_COLUMNS = ("id", "label", "group", "source")


@dataclass(frozen=True)
class Availability:
    """Whether a plugin can run here; if not, why and how to fix it."""

    ok: bool
    reason: str = ""

    @staticmethod
    def needs_modules(*modules: str, install: str) -> "Availability":
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if missing:
            return Availability(False, f"missing {', '.join(missing)}; install with: {install}")
        return Availability(True)


@dataclass
class SampleSet:
    """What a Dataset plugin returns: one row per image, and a way to get its pixels.

    ``table`` has at least the columns id, label, group (patient), source; ``load`` returns a
    uint8 array (N, H, W) of grayscale images, padded and resized to ``size`` (height, width).
    """

    table: pd.DataFrame
    classes: tuple[str, ...]
    positive_class: str
    load: Callable[[pd.DataFrame, tuple[int, int]], np.ndarray]
    notes: list[str] = field(default_factory=list)  # facts worth keeping in the manifest
    fingerprint: str = ""
    warnings: list[str] = field(default_factory=list)  # what the user must see (shortfalls, skipped files)

    def __post_init__(self):
        missing = [c for c in SAMPLE_COLUMNS if c not in self.table.columns]
        if missing:
            raise ValueError(f"sample table lacks columns {missing}")
        if self.positive_class not in self.classes:
            raise ValueError(f"positive class {self.positive_class!r} not in {self.classes}")

    @property
    def labels(self) -> np.ndarray:
        """Integer labels in the order of ``classes``."""
        index = {c: i for i, c in enumerate(self.classes)}
        return self.table["label"].map(index).to_numpy(dtype=np.int64)


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    augment: bool = False  # random horizontal flips and shifts of up to 5% while training
    class_weight: str = "none"  # "balanced": weight the loss by inverse class frequency


@dataclass
class FoldJob:
    """Everything an engine needs to train on one fold and predict the other: plain arrays."""

    x_train: np.ndarray  # uint8 (N, H, W) grayscale
    y_train: np.ndarray  # int64 (N,)
    x_test: np.ndarray
    num_classes: int
    options: Mapping[str, Any]  # the backbone's options, defaults merged with the suite's
    training: TrainingConfig
    seed: int
    progress: Callable[[int, int], None] | None = None  # (epoch done, epochs) for progress bars
    train_ids: Sequence[str] | None = None  # sample ids: let engines reuse per-image work across folds
    test_ids: Sequence[str] | None = None
    x_external: Mapping[str, np.ndarray] = field(default_factory=dict)  # test-only data sets to predict too


@dataclass
class FoldOutput:
    """What an engine returns for one fold."""

    probabilities: np.ndarray  # float (N_test, num_classes), rows sum to one
    train_seconds: float
    predict_seconds: float
    info: dict = field(default_factory=dict)  # e.g. frozen/trainable parameter counts
    external: dict = field(default_factory=dict)  # data set alias -> probabilities on job.x_external[alias]


def balanced_class_weights(y: np.ndarray, num_classes: int) -> np.ndarray:
    """n / (k * count_c) per class (scikit-learn's "balanced"); 0 for a class absent from y."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=num_classes).astype(float)
    with np.errstate(divide="ignore"):
        return np.where(counts > 0, len(y) / (num_classes * counts), 0.0)


class Dataset:
    """A Dataset plugin: a named source of labelled, grouped images."""

    name: str = ""
    description: str = ""
    #: options a suite may set, with their defaults
    defaults: Mapping[str, Any] = {}

    def availability(self) -> Availability:
        return Availability(True)

    def samples(self, options: Mapping[str, Any], seed: int, data_dir: str | None) -> SampleSet:
        raise NotImplementedError


class Backbone:
    """A Backbone plugin: builds a network (cutoff + head) and trains/predicts on a fold."""

    name: str = ""  # "framework/network", e.g. "keras/mobilenet_v2"
    framework: str = ""
    description: str = ""
    defaults: Mapping[str, Any] = {}

    def availability(self) -> Availability:
        return Availability(True)

    def check_options(self, options: Mapping[str, Any]) -> list[str]:
        """Problems with option *values* (keys are checked by the suite); empty when fine."""
        return []

    def prepare(self, options: Mapping[str, Any]) -> None:
        """Fail fast, before any training, when e.g. the requested weights cannot be had."""

    def fit_predict(self, job: FoldJob) -> FoldOutput:
        raise NotImplementedError

    def describe(self, options: Mapping[str, Any], input_size: Sequence[int]) -> dict:
        return {"framework": self.framework}


class Evaluator:
    """An Evaluator plugin: turns the fold records of one cell into named metrics."""

    name: str = ""
    description: str = ""

    def availability(self) -> Availability:
        return Availability(True)

    def evaluate(self, records: Sequence[Mapping[str, Any]], classes: Sequence[str],
                 positive_class: str) -> dict[str, float]:
        raise NotImplementedError


@dataclass
class VerifyReport:
    """What `benchbox data verify` found for one data source under a data root."""

    source: str
    root: str
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.changed)


class DataSource:
    """A raw data source a Dataset plugin reads: where it comes from and how to fetch/verify it.

    ``benchbox data fetch`` and ``benchbox data verify`` work through these objects only, so the
    core never imports a data plugin."""

    name: str = ""
    description: str = ""
    home: str = ""  # the project page a user can read
    layout: str = ""  # what the source looks like under the data root, for placing it by hand

    def fetch(self, root: Path, progress: Callable[[int, int | None], None] | None = None) -> Path:
        """Download, check and unpack into ``root``; return the source's folder. Raise DataError."""
        raise NotImplementedError

    def verify(self, root: Path) -> VerifyReport:
        """Compare the files under ``root`` with what this source should hold."""
        raise NotImplementedError
