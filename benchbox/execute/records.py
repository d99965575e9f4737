"""The typed values at the seams of a run: which cell a fold belongs to, and what a finished fold
stored. These are what the run store writes and reads; every view is computed from them.

A fold record carries a schema version. Schema 1 (benchbox 0.1 runs) named a probe cell by the
string ``"DATASET@PROBE"``; it is read back through the manifest's data set table, which names
each alias's base data set and probe, so old run directories stay readable without parsing names.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchbox.errors import StoreError

SCHEMA = 2


@dataclass(frozen=True, order=True)
class CellKey:
    """One cell of a run: a data set (optionally seen through a shortcut probe) x a backbone."""

    dataset: str
    backbone: str
    probe: str = ""

    @property
    def data(self) -> DataKey:
        return DataKey(self.dataset, self.probe)

    @property
    def label(self) -> str:
        """How tables show the data side of the cell."""
        return self.data.label

    @property
    def slug(self) -> str:
        """File-name form (aliases are restricted to letters, digits, '-', '_' and '.')."""
        return f"{self.data.slug}__{self.backbone}"

    def __str__(self) -> str:
        return f"{self.label} x {self.backbone}"


@dataclass(frozen=True, order=True)
class DataKey:
    """A data set of the suite, as it is fed to a backbone: plain, or through a probe."""

    dataset: str
    probe: str = ""

    @property
    def label(self) -> str:
        return f"{self.dataset} [{self.probe}]" if self.probe else self.dataset

    @property
    def slug(self) -> str:
        return f"{self.dataset}+{self.probe}" if self.probe else self.dataset


@dataclass
class ExternalPrediction:
    """A fold model's predictions on a test-only data set it never trained on."""

    ids: list[str]
    labels: list[str]  # class names of that data set (matched to the cell's classes by name)
    sources: list[str]
    probabilities: np.ndarray
    groups: list[str] | None = None  # patients (for patient-level intervals); None in older records

    def to_json(self) -> dict:
        out = {
            "ids": list(self.ids),
            "labels": list(self.labels),
            "sources": list(self.sources),
            "probabilities": np.asarray(self.probabilities, dtype=float).tolist(),
        }
        if self.groups is not None:
            out["groups"] = list(self.groups)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExternalPrediction:
        return cls(
            ids=list(data["ids"]),
            labels=[str(v) for v in data["labels"]],
            sources=[str(v) for v in data.get("sources") or ["unknown"] * len(data["ids"])],
            probabilities=np.asarray(data["probabilities"], dtype=float),
            groups=[str(v) for v in data["groups"]] if data.get("groups") else None,
        )


@dataclass
class FoldRecord:
    """What one finished fold stored: predictions on its test fold, and the harness's timings."""

    cell: CellKey
    fold: int
    seed: int
    classes: list[str]
    test_ids: list[str]
    y_true: np.ndarray  # int, index into classes
    probabilities: np.ndarray  # float (n_test, n_classes)
    test_groups: list[str]
    test_sources: list[str]
    n_train: int
    train_seconds: float  # measured by the harness: the whole fit call
    predict_seconds: float  # measured by the harness: the test fold's predict call
    infer_images_per_sec: float  # measured by the harness: the whole network, warm-up excluded
    info: dict = field(default_factory=dict)  # the plugin's own breakdown (never a headline)
    external: dict[str, ExternalPrediction] = field(default_factory=dict)
    suite_digest: str = ""
    written_at: str = ""
    schema: int = SCHEMA

    @property
    def n_test(self) -> int:
        return len(self.y_true)

    @property
    def predicted(self) -> np.ndarray:
        return np.asarray(self.probabilities).argmax(axis=1)

    @property
    def refit(self) -> bool:
        """A cross-dataset run's model trained on the whole data set: its external predictions count,
        its own "test" predictions (a batch of its training images, for the timing) never do."""
        return bool(self.info.get("refit"))

    def to_json(self) -> dict:
        return {
            "schema": SCHEMA,
            "dataset": self.cell.dataset,
            "probe": self.cell.probe,
            "backbone": self.cell.backbone,
            "fold": self.fold,
            "seed": self.seed,
            "classes": list(self.classes),
            "test_ids": list(self.test_ids),
            "y_true": np.asarray(self.y_true, dtype=int).tolist(),
            "test_groups": list(self.test_groups),
            "test_sources": list(self.test_sources),
            "probabilities": np.asarray(self.probabilities, dtype=float).tolist(),
            "n_train": int(self.n_train),
            "n_test": self.n_test,
            "train_seconds": float(self.train_seconds),
            "predict_seconds": float(self.predict_seconds),
            "infer_images_per_sec": _finite_or_none(self.infer_images_per_sec),
            "info": self.info,
            "external": {a: e.to_json() for a, e in self.external.items()},
            "suite_digest": self.suite_digest,
            "written_at": self.written_at or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], aliases: Mapping[str, DataKey] | None = None) -> FoldRecord:
        """Read a stored record of any schema; ``aliases`` maps schema-1 data set names to their key."""
        schema = int(data.get("schema", 1))
        if schema > SCHEMA:
            raise StoreError(
                f"fold record of schema {schema}, newer than this benchbox reads ({SCHEMA}); upgrade benchbox"
            )
        for key in ("dataset", "backbone", "fold", "y_true", "probabilities"):
            if key not in data:
                raise ValueError(f"missing field {key!r}")
        if schema == 1:
            data_key = (aliases or {}).get(data["dataset"], DataKey(data["dataset"]))
        else:
            data_key = DataKey(data["dataset"], data.get("probe") or "")
        y_true = np.asarray(data["y_true"], dtype=np.int64)
        probs = np.asarray(data["probabilities"], dtype=float)
        ids = [str(i) for i in (data.get("test_ids") or data.get("test_indices") or range(len(y_true)))]
        predict_s = float(data.get("predict_seconds") or 0.0)
        if "infer_images_per_sec" in data:
            rate = data["infer_images_per_sec"]
            rate = float("nan") if rate is None else float(rate)
        else:  # schema 1: the engine's own figure, from the images it timed
            timed = (data.get("info") or {}).get("predict_images", len(y_true))
            rate = timed / predict_s if predict_s > 0 else float("nan")
        return cls(
            cell=CellKey(data_key.dataset, str(data["backbone"]), data_key.probe),
            fold=int(data["fold"]),
            seed=int(data.get("seed", 0)),
            classes=[str(c) for c in data.get("classes") or []],
            test_ids=ids,
            y_true=y_true,
            probabilities=probs,
            test_groups=[str(g) for g in data.get("test_groups") or ids],
            test_sources=[str(s) for s in data.get("test_sources") or ["unknown"] * len(ids)],
            n_train=int(data.get("n_train", 0)),
            train_seconds=float(data.get("train_seconds") or 0.0),
            predict_seconds=predict_s,
            infer_images_per_sec=rate,
            info=dict(data.get("info") or {}),
            external={a: ExternalPrediction.from_json(e) for a, e in (data.get("external") or {}).items()},
            suite_digest=str(data.get("suite_digest", "")),
            written_at=str(data.get("written_at", "")),
            schema=schema,
        )


def _finite_or_none(value: float):
    return float(value) if value is not None and math.isfinite(value) else None


def legacy_aliases(manifest: Mapping[str, Any]) -> dict[str, DataKey]:
    """The manifest's data set names -> keys, read from its data set table (no name parsing).

    Works for both manifest formats: schema-1 names a probe's data set 'DATASET@PROBE' and says
    ``probe_of`` and ``probe``; schema 2 says ``dataset`` and ``probe``."""
    out = {}
    for alias, meta in (manifest.get("datasets") or {}).items():
        out[alias] = DataKey(meta.get("dataset") or meta.get("probe_of") or alias, meta.get("probe") or "")
    return out


def data_index(manifest: Mapping[str, Any]) -> dict[DataKey, dict]:
    """Data key -> the manifest's description of that data set (classes, counts, sources...)."""
    aliases = legacy_aliases(manifest)
    return {aliases[a]: meta for a, meta in (manifest.get("datasets") or {}).items()}


def cell_index(manifest: Mapping[str, Any]) -> dict[CellKey, dict]:
    """Cell key -> the manifest's description of the cell, in run order."""
    aliases = legacy_aliases(manifest)
    out = {}
    for c in manifest.get("cells") or []:
        if "probe" in c:
            key = CellKey(c["dataset"], c["backbone"], c.get("probe") or "")
        else:
            data = aliases.get(c["dataset"], DataKey(c["dataset"]))
            key = CellKey(data.dataset, c["backbone"], data.probe)
        out[key] = c
    return out


def group_by_cell(records) -> dict[CellKey, list[FoldRecord]]:
    """Records of each cell, in fold order."""
    cells: dict[CellKey, list[FoldRecord]] = {}
    for r in records:
        cells.setdefault(r.cell, []).append(r)
    return {k: sorted(v, key=lambda r: r.fold) for k, v in cells.items()}
