"""The runner with a fake backbone: resume, records, fold assignment, hooks (no framework needed)."""

import numpy as np
import pytest

from benchbox import hookimpl
from benchbox.contracts import Backbone
from benchbox.define.suite import load_suite
from benchbox.execute.records import CellKey
from benchbox.execute.runner import run_suite
from benchbox.execute.store import RunStore
from benchbox.plugins import load_registry
from conftest import write_suite


class Oracle(Backbone):
    """Predicts the true class of every synthetic image from its mean brightness (a cheat that
    needs no framework) and counts its calls."""

    name = "fake/oracle"
    framework = "none"
    defaults = {"input_size": [32, 32], "weights": "none"}
    calls = 0

    def fit(self, job):
        Oracle.calls += 1
        return job.num_classes

    def predict(self, model, images, ids=None):
        return np.full((len(images), model), 1.0 / model)


class Events:
    def __init__(self):
        self.seen = []

    @hookimpl
    def benchbox_backbones(self):
        return [Oracle()]

    @hookimpl
    def benchbox_run_start(self, run_dir, manifest):
        self.seen.append("start")

    @hookimpl
    def benchbox_fold_end(self, run_dir, record):
        self.seen.append(f"fold{record.fold}")

    @hookimpl
    def benchbox_run_end(self, run_dir, result):
        self.seen.append("end")


SUITE = """
name = "fake"
output_dir = "{out}"
[protocol]
k = 4
grouped = true
[datasets.syn]
plugin = "synthetic"
images = 40
patients = 16
[backbones.o]
plugin = "fake/oracle"
"""


@pytest.fixture
def setup(tmp_path):
    events = Events()
    registry = load_registry(extra_plugins=[events])
    suite = load_suite(write_suite(tmp_path / "s.toml", SUITE.format(out=tmp_path / "runs")), registry)
    return suite, registry, events


def test_run_writes_records_split_manifest_views_and_calls_hooks(setup):
    suite, registry, events = setup
    run_dir = run_suite(suite, registry).run_dir
    store = RunStore(run_dir)
    records, problems = store.read_records()
    assert sorted(r.fold for r in records) == [0, 1, 2, 3] and not problems
    split = store.read_split("syn")
    assert len(split["ids"]) == 40 and set(split["fold"]) == {0, 1, 2, 3}
    manifest = store.manifest()
    assert manifest["status"] == "complete" and manifest["seed"] == 0
    assert manifest["datasets"]["syn"]["patients"] == 16
    assert "python" in manifest["environment"]
    for view in ("report.md", "summary.csv", "confusion.csv"):
        assert (run_dir / view).exists()
    assert events.seen == ["start", "fold0", "fold1", "fold2", "fold3", "end"]


def test_resume_skips_finished_folds(setup):
    suite, registry, _ = setup
    run_dir = run_suite(suite, registry).run_dir
    store = RunStore(run_dir)
    store.record_path(CellKey("syn", "o"), 2).unlink()
    store.update_manifest(status="running")
    before = Oracle.calls
    again = run_suite(suite, registry).run_dir
    assert again == run_dir
    assert Oracle.calls - before == 1  # only fold 2 was redone
    assert len(store.read_records()[0]) == 4


def test_new_flag_starts_a_fresh_run(setup):
    suite, registry, _ = setup
    first = run_suite(suite, registry).run_dir
    RunStore(first).update_manifest(status="running")
    assert run_suite(suite, registry, new=True).run_dir != first
