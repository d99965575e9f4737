"""Inputs a real user brings (issue 24): each case failed before its fix — an internal error, a message
without the file's name, or a damaged value counted as a result. The CLI cases call ``benchbox.cli.main``
in this process (the real error boundary: exit code and message, no traceback), which keeps them fast."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from benchbox import hookimpl
from benchbox.cli import main
from benchbox.contracts import Backbone
from benchbox.errors import DataError
from benchbox.execute.records import CellKey, FoldRecord
from benchbox.execute.store import RunStore
from test_data import cohen_root  # noqa: F401  (fixture: Cohen's layout, one listed image missing)
from test_html_report import stored  # noqa: F401  (fixture: a hand-written run directory)
from test_user_data import img, samples, tree  # noqa: F401  (fixture: a folder data set)


def cli(capsys, *args) -> tuple[int, str]:
    """Exit code and everything printed by `benchbox ARGS`, run through its error boundary."""
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    out = capsys.readouterr()
    text = " ".join((out.out + out.err).split())  # rich's line wrapping undone
    assert "Traceback" not in text and "internal error" not in text, text
    return exit_.value.code, text


def first_record(run_dir: Path) -> Path:
    return sorted((run_dir / "folds").glob("*.json"))[0]


# --- p-values ------------------------------------------------------------------------------------
def test_p_values_below_display_precision_read_less_than():
    from benchbox.results.summary import mark_significance, p_text

    assert p_text(0.0001) == "p < 0.001" and p_text(0.0004) == "p < 0.001"
    assert p_text(0.0006) == "p=0.001" and p_text(0.2) == "p=0.200"
    y = np.zeros(60, int)
    ids = [f"i{i}" for i in range(60)]

    def record(backbone, right):
        probs = np.full((60, 2), 0.1)
        probs[:, 0] = np.where(right, 0.9, 0.1)
        probs[:, 1] = 1 - probs[:, 0]
        return FoldRecord(CellKey("d", backbone), 0, 0, ["a", "b"], ids, y, probs, ids, ["s"] * 60, 1, 1, 1, 1)

    cells = {
        CellKey("d", "good"): [record("good", np.ones(60, bool))],
        CellKey("d", "bad"): [record("bad", np.zeros(60, bool))],
    }
    rows = [{"cell": c, "acc": 1.0 if c.backbone == "good" else 0.0} for c in cells]
    mark_significance(rows, cells, "acc")
    assert rows[1]["vs_best"] == "p < 0.001*"  # was 'p=0.000*'


# --- damaged run directories ---------------------------------------------------------------------
def test_report_on_a_deeply_nested_record_names_the_file(stored, capsys):  # noqa: F811
    bad = first_record(stored.run_dir)
    bad.write_text("[" * 200_000 + "]" * 200_000)  # json.loads: RecursionError
    code, text = cli(capsys, "report", stored.run_dir)
    assert code == 0 and f"{bad}: skipped a damaged fold record (JSON nested too deeply" in text


@pytest.mark.parametrize(
    "change, why",
    [
        ({"fold": 10**30}, "fold number 1000000000000000000000000000000 is impossible"),
        ({"fold": -1}, "fold number -1 is impossible"),
        ({"classes": ["covid", "pneumonia", "alien"]}, "classes ['alien'] are not the data set's"),
        ({"y_true": [10**30] * 12}, "skipped a damaged fold record"),  # OverflowError before
        ({"y_true": [7] * 12}, "true labels outside the class list"),
    ],
)
def test_records_with_impossible_values_are_refused(stored, change, why):  # noqa: F811
    bad = first_record(stored.run_dir)
    data = json.loads(bad.read_text())
    bad.write_text(json.dumps({**data, **change}))
    store = RunStore(stored.run_dir)
    records, problems = store.read_records()
    assert len(records) == len(stored.records) - 1  # the others still count
    assert any(p.startswith(f"{bad}:") and why in p and "rerun `benchbox run`" in p for p in problems), problems
    cell = CellKey(data["dataset"], data["backbone"], data.get("probe") or "")
    assert not store.has_record(cell, data["fold"])  # and a run redoes it


def test_a_stray_tmp_file_in_folds_is_removed_by_the_next_run_holding_the_lock(stored):  # noqa: F811
    store = RunStore(stored.run_dir)
    stray = store.path / "folds" / ".tmp-1234.json"
    stray.write_text("{half a rec")
    assert any(str(stray) in p for p in store.read_records()[1])  # warned about on every report...
    store.lock()
    try:
        removed = store.remove_temporary()  # ...until a run takes the lock (session.open_session does this)
    finally:
        store.unlock()
    assert stray in removed and not stray.exists()
    assert store.read_records()[1] == [] and len(store.read_records()[0]) == len(stored.records)


# --- explain ---------------------------------------------------------------------------------------
def explanations(stored) -> Path:  # noqa: F811
    """Grad-CAM maps of one stored fold, as a run with [explain] writes them."""
    from benchbox.execute.store import arrays_npz

    rec = stored.records[0]
    n = len(rec.test_ids)
    path = RunStore(stored.run_dir).artefact_path("explanations", rec.cell, rec.fold)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        arrays_npz(
            {
                "maps": np.random.default_rng(0).random((n, 4, 4)),
                "images": np.zeros((n, 8, 8), np.uint8),
                "ids": np.array(rec.test_ids),
                "y_true": rec.y_true,
                "predicted": rec.predicted,
                "probability": rec.probabilities.max(1),
                "classes": np.array(rec.classes),
            }
        )
    )
    return path


def test_explain_out_at_an_existing_file_says_what_to_do(stored, tmp_path, capsys):  # noqa: F811
    explanations(stored)
    target = tmp_path / "panels.png"
    target.write_bytes(b"mine")
    code, text = cli(capsys, "explain", stored.run_dir, "--out", target)  # was FileExistsError
    assert code == 1 and f"--out {target} is a file" in text and "folder" in text
    assert target.read_bytes() == b"mine"  # left as it was


def test_a_truncated_explanations_file_is_named(stored, capsys):  # noqa: F811
    path = explanations(stored)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    code, text = cli(capsys, "explain", stored.run_dir)  # was BadZipFile, no file named
    assert code == 1 and f"{path}: skipped damaged Grad-CAM maps" in text


# --- data -----------------------------------------------------------------------------------------
def huge_png(path: Path, width: int = 16000, height: int = 14000) -> Path:
    """A PNG whose header claims 16000 x 14000 pixels (Pillow's decompression-bomb guard fires on open)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_is_named_and_skip_unreadable_skips_it(tree):  # noqa: F811
    from benchbox.data.images import UnreadableImage, decode_file

    bomb = huge_png(tree / "covid" / "huge.png")
    with pytest.raises(UnreadableImage, match=f"cannot decode image {bomb}: too large to decode safely"):
        decode_file(bomb, (32, 32), skip_unreadable=False)
    s = samples("folder", root=str(tree), skip_unreadable=True)
    assert "covid/huge.png" not in set(s.table["id"]) and any("huge.png" in w for w in s.warnings)


def test_an_image_listed_in_cohen_metadata_but_missing_is_named(cohen_root):  # noqa: F811
    from benchbox_xray.sources import read_cohen

    warnings = []
    read_cohen(cohen_root, warnings)
    assert any("missing.jpg" in w and "metadata.csv" in w for w in warnings), warnings  # a warning, not a note only


def test_data_dir_that_is_a_file_says_so(tmp_path, capsys):
    from benchbox.data.datadir import data_root

    suite = tmp_path / "s.toml"
    suite.write_text('name = "s"\n[datasets.syn]\nplugin = "synthetic"\n[backbones.c]\nplugin = "centroid"\n')
    code, text = cli(capsys, "validate", suite, "--data-dir", suite)
    assert code == 2 and f"{suite} is a file, not a folder" in text
    with pytest.raises(DataError, match="is a file, not a folder"):
        data_root(suite)


def test_an_empty_class_folder_is_refused_unless_allow_empty(tree):  # noqa: F811
    (tree / "viral").mkdir()
    with pytest.raises(DataError, match=r"'.*viral' hold no images.*allow_empty = true"):
        samples("folder", root=str(tree))
    assert "viral" not in samples("folder", root=str(tree), allow_empty=True).classes


# --- degenerate models ---------------------------------------------------------------------------
def test_a_model_predicting_one_class_is_marked_in_the_table_and_report(stored, registry):  # noqa: F811
    from benchbox.results.summary import summarise
    from benchbox.results.views.report import comparison_frame, render_markdown

    store = RunStore(stored.run_dir)
    for p in sorted((store.path / "folds").glob("*.json")):
        data = json.loads(p.read_text())
        if data["backbone"] == "centroid" and not data["probe"]:
            probs = np.tile([0.2, 0.7, 0.1], (len(data["y_true"]), 1))  # 'pneumonia' for everyone
            p.write_text(json.dumps({**data, "probabilities": probs.tolist()}))
    result = summarise(store, registry)
    frame = comparison_frame(result)
    notes = dict(zip(zip(frame["Data"], frame["Backbone"]), frame["Note"]))
    assert notes[("syn", "centroid")] == "degenerate: predicts 'pneumonia' for all 24 test images"
    assert sum(bool(n) for n in notes.values()) == 1  # the others are not marked
    assert "degenerate model" in render_markdown(result)
    from benchbox.results.views.leaderboard import collect

    entries, _, _ = collect([stored.run_dir], registry)
    said = dict(zip(entries["backbone"], entries["notes"]))
    assert "degenerate model: it predicts 'pneumonia' for all 24 test images" in said["centroid"]


def test_nearly_constant_scores_are_marked_too(stored, registry):  # noqa: F811
    from benchbox.results.summary import summarise

    store = RunStore(stored.run_dir)
    originals = {p: p.read_text() for p in (store.path / "folds").glob("*.json")}

    def rescore(spread_of_class_1):
        rng = np.random.default_rng(0)
        for p, text in originals.items():
            data = json.loads(text)
            if data["backbone"] == "centroid" and not data["probe"]:
                n = len(data["y_true"])
                probs = np.array([0.335, 0.335, 0.33]) + rng.normal(0, 1e-5, (n, 3))  # argmax flips: not one class
                probs[:, 1] += np.where(np.arange(n) % 2, spread_of_class_1, -spread_of_class_1)
                p.write_text(json.dumps({**data, "probabilities": (probs / probs.sum(1, keepdims=True)).tolist()}))
        result = summarise(store, registry)
        return str(result.summary[result.summary["backbone"] == "centroid"].iloc[0].get("degenerate"))

    assert "gives nearly the same scores to all 24 test images" in rescore(0.0)
    assert "nearly the same scores" not in rescore(0.02)  # a spread of 0.02 carries information


def test_a_missing_fold_is_not_taken_for_a_missing_evaluator(stored, registry):  # noqa: F811
    """summarise's list of missing folds overwrote its list of missing evaluators, so `benchbox report` on a
    run with a fold missing left the report files stale, 'since they show the metrics of evaluator(s) 0'."""
    from benchbox.results.summary import summarise

    first_record(stored.run_dir).unlink()
    result = summarise(RunStore(stored.run_dir), registry)
    assert result.missing_evaluators == []
    assert any("folds [0] missing" in p for p in result.problems)


@pytest.mark.parametrize("value", ["0", "-2", "many", "1.5"])
def test_threads_takes_auto_or_a_number(capsys, tmp_path, value):
    code, text = cli(capsys, "run", tmp_path / "s.toml", "--threads", value)
    assert code == 2 and "Invalid value for '--threads'" in text and "give auto" in text


class _Majority(Backbone):
    name, framework = "test/majority", "none"
    defaults = {"input_size": [32, 32]}

    def fit(self, job):
        return np.bincount(job.y_train, minlength=job.num_classes) / len(job.y_train)

    def predict(self, model, images, ids=None):
        return np.tile(model, (len(images), 1))


class _MajorityPlugin:
    @hookimpl
    def benchbox_backbones(self):
        return [_Majority()]


def test_an_edited_suite_toml_in_a_run_directory_is_named_and_ignored(tmp_path):
    from benchbox.define.suite import load_suite
    from benchbox.execute.runner import rerender, run_suite
    from benchbox.plugins import load_registry
    from conftest import TINY_SUITE, write_suite

    registry = load_registry([_MajorityPlugin()])
    body = TINY_SUITE.format(name="ed", out=tmp_path / "runs", backbones='[backbones.m]\nplugin = "test/majority"\n')
    suite = write_suite(tmp_path / "s.toml", body)
    result = run_suite(load_suite(suite, registry), registry)
    store = RunStore(result.run_dir)
    assert store.suite_edited(store.manifest()) is None
    (result.run_dir / "suite.toml").write_text(body.replace("epochs = 1", "epochs = 50"))
    again = rerender(result.run_dir, registry)
    said = [p for p in again.problems if "was edited after the run started" in p]
    assert said and "ignores the edit" in said[0]
    assert again.summary.iloc[0]["folds"] == 3  # the run's records, as they were
