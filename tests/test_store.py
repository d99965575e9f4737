import json
import os

import numpy as np
import pytest

from benchbox.errors import StoreError
from benchbox.execute.records import CellKey, FoldRecord
from benchbox.execute.store import RunStore, find_resumable, write_atomic

CELL = CellKey("d", "b")


def record(fold):
    return FoldRecord(
        cell=CELL,
        fold=fold,
        seed=0,
        classes=["a", "b"],
        test_ids=["x", "y"],
        y_true=np.array([0, 1]),
        probabilities=np.array([[0.9, 0.1], [0.2, 0.8]]),
        test_groups=["x", "y"],
        test_sources=["s", "s"],
        n_train=4,
        train_seconds=1.0,
        predict_seconds=0.1,
        infer_images_per_sec=20.0,
        suite_digest="x",
    )


def test_atomic_write_leaves_old_file_intact_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    write_atomic(target, "old")

    def crash(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left behind


def test_records_round_trip_and_damaged_ones_are_reported(tmp_path):
    store = RunStore(tmp_path)
    store.create({"suite": "s", "suite_digest": "x", "status": "running"}, "name='s'")
    store.write_record(record(0))
    store.write_record(record(1))
    store.record_path(CELL, 2).write_text("{ truncated")
    records, problems = store.read_records()
    assert [r.fold for r in records] == [0, 1]
    assert records[1].probabilities.tolist() == [[0.9, 0.1], [0.2, 0.8]] and records[1].cell == CELL
    assert len(problems) == 1 and "fold02" in problems[0] and "damaged" in problems[0]
    assert store.has_record(CELL, 1) and not store.has_record(CELL, 2)
    assert store.has_record(CELL, 1, digest="x") and not store.has_record(CELL, 1, digest="edited")


def test_foreign_directory_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="not a benchbox run"):
        RunStore(tmp_path).manifest()
    with pytest.raises(StoreError, match="no such run directory"):
        RunStore(tmp_path / "missing").manifest()


def test_resume_finds_only_unfinished_runs_of_the_same_suite(tmp_path):
    for name, digest, status in [("s-1", "a", "complete"), ("s-2", "a", "running"), ("s-3", "b", "running")]:
        RunStore(tmp_path / name).create({"suite": "s", "suite_digest": digest, "status": status}, "")
    assert find_resumable(tmp_path, "s", "a") == tmp_path / "s-2"
    assert find_resumable(tmp_path, "s", "c") is None
    assert json.loads((tmp_path / "s-2" / "manifest.json").read_text())["format"] == "benchbox-run/2"
