"""A run session: the run directory a `benchbox run` writes — chosen, locked, checked, described.

Resuming is only ever of the same suite content: the manifest's digest must match, every record
carries the digest too, a directory holding records but no manifest is refused, and stored
splits must equal the ones drawn now. A run directory can therefore not lie about what its
records mean.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from benchbox.data.splitters import fold_count
from benchbox.define.plan import PreparedData
from benchbox.define.suite import Suite, file_in_the_way
from benchbox.errors import StoreError
from benchbox.execute.environment import environment
from benchbox.execute.records import DataKey
from benchbox.execute.store import FORMAT, RunStore, find_resumable, split_fingerprint, unfinished_of_other_content


@dataclass
class Session:
    store: RunStore
    manifest: dict
    resumed: bool
    notes: list[str]

    @property
    def run_dir(self) -> Path:
        return self.store.path

    def close(self) -> None:
        self.store.unlock()


def choose_run_dir(suite: Suite, run_dir: Path | None, new: bool) -> tuple[Path, list[str]]:
    """The directory to write, and what the user should be told about the choice."""
    notes = []
    if run_dir is not None:
        run_dir = Path(run_dir)
        blocker = file_in_the_way(run_dir)
        if blocker == run_dir:
            raise StoreError(f"--run-dir {run_dir} is a file; name a folder (it is created if missing)")
        if blocker is not None:
            raise StoreError(
                f"--run-dir {run_dir}: {blocker} is a file, so no folder can be created there; name another folder"
            )
        if new and holds_a_run(run_dir):
            raise StoreError(
                f"--new with --run-dir {run_dir}: that folder already holds a run, and benchbox never writes a new "
                f"run over results; name another --run-dir, or delete {run_dir} to start over (without --new the "
                "same command resumes it)"
            )
        return run_dir, notes
    if file_in_the_way(Path(suite.output_dir)) is not None:
        raise StoreError(f"{suite.path}: output_dir {suite.output_dir} is (or lies under) a file; name a folder")
    if not new:
        found = find_resumable(suite.output_dir, suite.name, suite.digest)
        if found is not None:
            return found, [f"resuming unfinished run {found}"]
        other = unfinished_of_other_content(suite.output_dir, suite.name, suite.digest)
        if other is not None:
            notes.append(
                f"note: {other} is an unfinished run of an earlier version of this suite; it is left as it "
                "is and a new run starts (the suite changed, so its folds cannot be reused)"
            )
    path = Path(suite.output_dir) / f"{suite.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    while path.exists():
        path = Path(f"{path}x")
    return path, notes


def holds_a_run(path: Path) -> bool:
    """A manifest or fold records: what --new must not write over."""
    store = RunStore(path)
    return store.manifest_path.exists() or store.has_records()


def open_session(
    suite: Suite, registry, data: dict[DataKey, PreparedData], run_dir: Path | None = None, new: bool = False
) -> Session:
    """Choose, lock and check the run directory; write the manifest and splits of a new run."""
    path, notes = choose_run_dir(suite, run_dir, new)
    # with --run-dir the way to a fresh run is another folder; without, it is --new
    fresh = "choose another --run-dir" if run_dir is not None else "start a new run with --new"
    store = RunStore(path)
    store.lock()
    try:
        store.remove_temporary()  # left by a process that was killed while writing
        resumed = store.manifest_path.exists()
        if resumed:
            manifest = store.manifest()
            if manifest.get("format") != FORMAT:
                raise StoreError(
                    f"{path} was written by an older benchbox (format {manifest.get('format')}); "
                    f"`benchbox report` still reads it, but it cannot be resumed: {fresh}"
                )
            if manifest.get("suite_digest") != suite.digest:
                raise StoreError(f"{path} holds a run of a different suite (or an edited one); {fresh}")
            if not any(n.startswith("resuming") for n in notes):  # with --run-dir: say it too
                notes = [*notes, f"resuming the run in {path} (its finished folds are kept)"]
            notes += [n for n in [store.suite_edited(manifest)] if n]
        elif store.has_records():
            raise StoreError(
                f"{path} holds fold records but no manifest.json, so nothing says which suite made them; "
                "they are not adopted. Choose another --run-dir, or delete that folder"
            )
        else:
            manifest = build_manifest(suite, registry, data)
            store.create(manifest, suite.text)
        foreign = store.foreign_records(suite.digest)
        if foreign:
            raise StoreError(
                f"{path}: {len(foreign)} fold record(s) were written by another suite "
                f"(e.g. {foreign[0].name}); they are not adopted; {fresh}"
            )
        check_splits(store, suite, data, fresh)
    except BaseException:
        store.unlock()
        raise
    return Session(store, manifest, resumed, notes)


def check_splits(store: RunStore, suite: Suite, data: dict[DataKey, PreparedData], fresh: str) -> None:
    """The stored fold assignment must be the suite's; ``fresh`` says how to start over instead."""
    for key, ds in data.items():
        if ds.folds is None:
            continue
        previous = store.read_split(key.slug)
        ids = ds.samples.table["id"].astype(str).tolist()
        if previous and (previous["ids"] != ids or previous["fold"] != ds.folds.tolist()):
            raise StoreError(
                f"{store.path}: the folds of data set {key.label!r} differ from the stored split "
                f"(the data changed since the run started); {fresh}"
            )
        if not previous:
            store.write_split(key.slug, ids, ds.folds, suite.protocol.label)


def build_manifest(suite: Suite, registry, data: dict[DataKey, PreparedData]) -> dict:
    ds_meta = {}
    for key, ds in data.items():
        t = ds.samples.table
        entry = suite.datasets[key.dataset]
        ds_meta[key.slug] = {
            "dataset": key.dataset,
            "plugin": entry.plugin,
            "options": entry.options,
            "probe": key.probe or None,
            "probe_of": key.dataset if key.probe else None,
            "classes": list(ds.samples.classes),
            "positive_class": ds.samples.positive_class,
            "images": int(len(t)),
            "patients": int(t["group"].nunique()),
            "class_counts": {str(k): int(v) for k, v in t["label"].value_counts().items()},
            "fingerprint": ds.samples.fingerprint,
            "split_fingerprint": None
            if ds.folds is None
            else split_fingerprint(t["id"].astype(str).tolist(), ds.folds, suite.protocol.label),
            "notes": list(ds.samples.notes),
            "warnings": list(ds.samples.warnings),
            "class_sources": {
                str(c): {str(k): int(v) for k, v in t.loc[t["label"] == c, "source"].value_counts().items()}
                for c in ds.samples.classes
            },
            "external_only": ds.folds is None,
        }
    cells = []
    for cell in suite.cells:
        entry = suite.backbones[cell.backbone]
        backbone = registry.backbones[entry.plugin].obj
        cells.append(
            {
                "dataset": cell.dataset,
                "probe": cell.probe,
                "backbone": cell.backbone,
                "data": cell.data.slug,
                "plugin": entry.plugin,
                "framework": backbone.framework,
                "scheme": entry.scheme,
                "options": entry.options,
                "folds": fold_count(data[cell.data].folds) if cell.data in data else None,
                "external": suite.external.get(cell, []),
            }
        )
    return {
        "suite": suite.name,
        "suite_path": str(suite.path),
        "suite_digest": suite.digest,
        "suite_as_run": suite.raw,
        "seed": suite.seed,
        "protocol": suite.protocol.as_dict(),
        "protocol_label": suite.protocol.label,
        "training": suite.training.__dict__,
        "evaluators": suite.evaluators,
        "datasets": ds_meta,
        "probes": suite.probes,
        "probe_thresholds": suite.thresholds,
        "cells": cells,
        "record_schema": 2,
        "timing": "harness: fit wall time; predict wall time on the test fold; whole-network throughput on one "
        "batch after one warm-up call, device synchronised",
        "environment": environment(),
        "status": "running",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
