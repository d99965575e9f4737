"""The run store: one directory per run, holding the truth from which every view is computed.

    runs/<suite>-<timestamp>/
        manifest.json          suite as run, versions, hardware, seed, data fingerprints, status
        suite.toml             the suite file, verbatim
        splits/<dataset>.json  fold assignment per sample id
        folds/<dataset>__<backbone>__fold<NN>.json   one record per finished fold
        report.md, summary.csv, confusion.csv        views, re-rendered by `benchbox report`

Every file is written atomically (temporary file, fsync, rename), so an interrupted run never
leaves a half-written record; rerunning the command resumes from the records that exist.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from benchbox.errors import StoreError

MANIFEST = "manifest.json"
FORMAT = "benchbox-run/1"


def write_atomic(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=1, default=_jsonable))


def _jsonable(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in a record")


class RunStore:
    """Read and write one run directory."""

    def __init__(self, path):
        self.path = Path(path)

    # --- manifest -------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def create(self, manifest: dict, suite_text: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path / "suite.toml", suite_text)
        write_json(self.manifest_path, {"format": FORMAT, **manifest})

    def manifest(self) -> dict:
        if not self.path.is_dir():
            raise StoreError(f"{self.path}: no such run directory")
        if not self.manifest_path.exists():
            raise StoreError(f"{self.path}: not a benchbox run (no {MANIFEST}); pass a directory "
                             f"written by `benchbox run`")
        try:
            data = json.loads(self.manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StoreError(f"{self.manifest_path}: unreadable manifest ({exc})") from None
        if data.get("format") != FORMAT:
            raise StoreError(f"{self.manifest_path}: not a benchbox run manifest (format {data.get('format')!r})")
        return data

    def update_manifest(self, **fields) -> dict:
        data = self.manifest()
        data.update(fields)
        write_json(self.manifest_path, data)
        return data

    # --- splits ---------------------------------------------------------------------------
    def split_path(self, dataset: str) -> Path:
        return self.path / "splits" / f"{dataset}.json"

    def write_split(self, dataset: str, ids, folds, protocol: str) -> None:
        write_json(self.split_path(dataset), {"dataset": dataset, "protocol": protocol,
                                              "ids": list(ids), "fold": [int(f) for f in folds]})

    def read_split(self, dataset: str) -> dict | None:
        p = self.split_path(dataset)
        return json.loads(p.read_text()) if p.exists() else None

    # --- fold records ---------------------------------------------------------------------
    def record_path(self, dataset: str, backbone: str, fold: int) -> Path:
        return self.path / "folds" / f"{dataset}__{backbone}__fold{fold:02d}.json"

    def has_record(self, dataset: str, backbone: str, fold: int) -> bool:
        p = self.record_path(dataset, backbone, fold)
        if not p.exists():
            return False
        try:
            json.loads(p.read_text())
            return True
        except (OSError, json.JSONDecodeError):
            return False  # a damaged record is redone

    def write_record(self, record: dict) -> Path:
        p = self.record_path(record["dataset"], record["backbone"], record["fold"])
        write_json(p, {**record, "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        return p

    def failure_path(self, dataset: str, backbone: str, fold: int) -> Path:
        return self.path / "failed" / f"{dataset}__{backbone}__fold{fold:02d}.json"

    def write_failure(self, dataset: str, backbone: str, fold: int, error: str) -> None:
        """A unit that failed after its retries: kept with its error; rerunning the suite retries it."""
        write_json(self.failure_path(dataset, backbone, fold),
                   {"dataset": dataset, "backbone": backbone, "fold": fold, "error": error,
                    "failed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    def clear_failure(self, dataset: str, backbone: str, fold: int) -> None:
        self.failure_path(dataset, backbone, fold).unlink(missing_ok=True)

    def read_failures(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted((self.path / "failed").glob("*.json"))]

    def read_records(self) -> tuple[list[dict], list[str]]:
        """All readable fold records, and a message for every damaged one (the rest still count)."""
        records, problems = [], []
        for p in sorted((self.path / "folds").glob("*.json")):
            try:
                rec = json.loads(p.read_text())
                for key in ("dataset", "backbone", "fold", "y_true", "probabilities"):
                    if key not in rec:
                        raise ValueError(f"missing field {key!r}")
                records.append(rec)
            except (OSError, ValueError) as exc:
                problems.append(f"{p}: damaged fold record ({exc}); rerun `benchbox run` on the suite to redo it")
        return records, problems


def find_resumable(output_dir: Path, suite_name: str, digest: str) -> Path | None:
    """The newest unfinished run of the same suite content, if any."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    candidates = sorted(output_dir.glob(f"{suite_name}-*"), reverse=True)
    for cand in candidates:
        try:
            m = RunStore(cand).manifest()
        except StoreError:
            continue
        if m.get("suite_digest") == digest and m.get("status") != "complete":
            return cand
    return None
