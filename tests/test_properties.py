"""Property-based tests (issue 24), beside the table of bad inputs in test_bad_inputs.py: whatever a suite
file or a fold record holds, benchbox answers with its own error (one message naming the file and field),
never an internal one. Hypothesis draws TOML-shaped suites around the real keys and plugin names, and
JSON records made by damaging a valid one; each property runs in a few seconds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from benchbox.define.suite import TOP_KEYS, TRAINING_KEYS, Suite, validate_suite  # noqa: E402
from benchbox.errors import SuiteError  # noqa: E402
from benchbox.execute.records import CellKey, FoldRecord  # noqa: E402
from benchbox.execute.store import RunStore, write_json  # noqa: E402

#: the keys of the first-party split strategies ([protocol] is checked by the strategy its kind names)
PROTOCOL_KEYS = ("kind", "k", "stratified", "grouped", "test_fraction", "refit")

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

# --- values a TOML file can hold --------------------------------------------------------------------
scalars = st.one_of(
    st.text(max_size=12),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(["", "auto", "none", "kfold", "holdout", "cross-dataset", "cpu", "imagenet", "x" * 300]),
)
toml_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def table(keys) -> st.SearchStrategy:
    """A TOML table whose keys are mostly the real ones, with any values."""
    return st.dictionaries(st.sampled_from(sorted(keys)) | st.text(max_size=8), toml_values, max_size=5)


DATASET_PLUGINS = ["synthetic", "folder", "csv", "cohen", "dataset_1", "nope"]
BACKBONE_PLUGINS = ["centroid", "torch/mobilenet_v2", "keras/mobilenet_v2", "timm/resnet18", "x/y"]


def entries(plugins, options) -> st.SearchStrategy:
    entry = st.fixed_dictionaries(
        {"plugin": st.sampled_from(plugins) | toml_values},
        optional={k: toml_values for k in options},
    )
    return st.dictionaries(st.sampled_from(["a", "b", "x.1", "bad name", ""]) | st.text(max_size=6), entry, max_size=3)


suites = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["s", "my-suite", "bad name", ""]) | toml_values,
        "seed": st.integers(min_value=-5, max_value=2**70) | toml_values,
        "protocol": table(PROTOCOL_KEYS),
        "training": table(TRAINING_KEYS),
        "datasets": entries(DATASET_PLUGINS, ["images", "patients", "root", "classes", "label_map", "file"]),
        "backbones": entries(BACKBONE_PLUGINS, ["input_size", "weights", "cutoff", "freeze", "head"]),
        "evaluators": st.lists(st.sampled_from(["paper", "clinical", "nope"]) | toml_values, max_size=3),
        "experiments": toml_values,
        "probes": toml_values,
        "explain": toml_values,
        **{k: toml_values for k in sorted(TOP_KEYS - {"name", "seed", "protocol", "training"})},
    },
)


@SETTINGS
@given(raw=suites)
def test_any_suite_is_a_suite_or_a_suite_error(registry, raw, tmp_path_factory):
    path = Path("/nonexistent/suite.toml")
    try:
        out = validate_suite(raw, path, registry, text="")
    except SuiteError as exc:
        assert str(exc)  # a message, naming the file
    else:
        assert isinstance(out, Suite)


# --- fold records ----------------------------------------------------------------------------------
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=16,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run directory with one valid record (the model for the damaged ones)."""
    store = RunStore(tmp_path_factory.mktemp("props") / "run")
    store.path.mkdir(parents=True)
    classes = ["covid", "normal"]
    write_json(
        store.manifest_path,
        {
            "format": "benchbox-run/2",
            "suite": "p",
            "suite_digest": "d",
            "protocol": {"kind": "kfold", "k": 2},
            "datasets": {"syn": {"dataset": "syn", "classes": classes}},
            "cells": [{"dataset": "syn", "probe": "", "backbone": "b", "folds": 2}],
        },
    )
    y = np.array([0, 1, 1, 0])
    good = FoldRecord(
        CellKey("syn", "b"),
        0,
        0,
        classes,
        list("abcd"),
        y,
        np.eye(2)[y] * 0.8 + 0.1,
        list("abcd"),
        ["s"] * 4,
        4,
        1,
        1,
        1,
    )
    good.suite_digest = "d"
    return store, good.to_json()


@SETTINGS
@given(data=st.data())
def test_any_record_file_is_read_or_refused_as_damaged(run, data):
    store, good = run
    kind = data.draw(st.sampled_from(["damaged record", "any json"]))
    if kind == "damaged record":
        keys = data.draw(st.lists(st.sampled_from(sorted(good)), min_size=1, max_size=4, unique=True))
        record = {**good, **{k: data.draw(json_values, label=k) for k in keys}}
        drop = data.draw(st.lists(st.sampled_from(sorted(good)), max_size=2))
        record = {k: v for k, v in record.items() if k not in drop}
        text = json.dumps(record)
    else:
        text = json.dumps(data.draw(json_values))
    path = store.path / "folds" / "syn__b__fold00.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    records, problems = store.read_records()  # never raises
    assert len(records) + len(problems) == 1
    if problems:
        assert problems[0].startswith(f"{path}: skipped")
    else:  # read: then every view can use it
        rec = records[0]
        assert rec.probabilities.shape == (len(rec.y_true), len(rec.classes) or rec.probabilities.shape[1])
        assert np.isfinite(rec.probabilities).all() and 0 <= rec.fold < 3
    assert isinstance(store.has_record(CellKey("syn", "b"), 0, "d"), bool)


# --- data sets a user points at: the folder and csv readers (plugins/benchbox_userdata) -----------------
#: a 4 x 4 PNG: the readers list files by name and never decode them (unless skip_unreadable)
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000004000000040800000000dc5f5dfa0000000d4944415478da63f8cf0002"
    "0c0c0c00138001815c6b5b9a0000000049454e44ae426082"
)
DATA_SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: names a user may give a class folder or an image: any letters (accents, scripts, emoji), digits,
#: spaces and punctuation inside; not a path separator, a control character or a hidden/system name
name_chars = st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="/\\\x00")
names = (
    st.text(name_chars, min_size=1, max_size=10)
    .map(str.strip)
    .filter(lambda n: n and not n.startswith((".", "~")) and n not in ("__MACOSX", "@eaDir"))
)


def userdata(registry, plugin: str, **options):
    p = registry.get("dataset", plugin)
    return p.samples({**p.defaults, **options}, 0, None)


def counts_by_label(table) -> dict:
    return {str(k): int(v) for k, v in table["label"].value_counts().items()}


@DATA_SETTINGS
@given(tree=st.dictionaries(names, st.integers(min_value=1, max_value=3), min_size=2, max_size=4))
def test_any_folder_tree_is_read_with_its_class_folders_and_counts(registry, tree):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "my data"
        for folder, n in tree.items():
            (root / folder).mkdir(parents=True)
            for i in range(n):
                (root / folder / f"{folder} {i}.png").write_bytes(PNG)
        s = userdata(registry, "folder", root=str(root))
        assert s.classes == tuple(sorted(tree)) and s.positive_class == sorted(tree)[0]
        assert counts_by_label(s.table) == tree
        assert sorted(s.table["id"]) == sorted(f"{f}/{f} {i}.png" for f, n in tree.items() for i in range(n))
        assert all(Path(p).is_file() for p in s.table["path"])


@DATA_SETTINGS
@given(
    tree=st.dictionaries(names, st.integers(min_value=0, max_value=2), min_size=2, max_size=4).filter(
        lambda t: 0 in t.values()
    ),
    allow_empty=st.booleans(),
)
def test_an_empty_class_folder_is_refused_unless_allow_empty(registry, tree, allow_empty):
    import tempfile

    from benchbox.errors import DataError

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        for folder, n in tree.items():
            (root / folder).mkdir(parents=True)
            for i in range(n):
                (root / folder / f"{i}.png").write_bytes(PNG)
        full = {f: n for f, n in tree.items() if n}
        try:
            s = userdata(registry, "folder", root=str(root), allow_empty=allow_empty)
        except DataError as exc:
            message = str(exc)
            if not full:
                assert "no images under" in message and str(root) in message
            elif not allow_empty:
                assert "hold no images" in message and "allow_empty = true" in message
                assert any(repr(str(root / f)) in message for f, n in tree.items() if not n)  # named
            else:  # left out, and fewer than two classes are left
                assert len(full) < 2 and "a classifier needs at least 2" in message
        else:
            assert allow_empty and len(full) >= 2
            assert s.classes == tuple(sorted(full)) and counts_by_label(s.table) == full
            assert any("hold no images" in w for w in s.warnings)


labels = st.text(name_chars, min_size=1, max_size=10).map(str.strip).filter(bool)
cells = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8)


@DATA_SETTINGS
@given(
    rows=st.lists(st.tuples(names, labels, names), min_size=2, max_size=8, unique_by=lambda r: r[0]).filter(
        lambda rows: len({r[1] for r in rows}) >= 2
    ),
    extra=st.dictionaries(
        names.filter(
            lambda n: (
                n.lower() not in ("path", "label", "patient", "group", "source", "split", "patient_id", "patientid")
            )
        ),
        cells,
        max_size=2,
    ),
    header=st.sampled_from([("path", "label", "patient"), ("Path", "LABEL", "Patient"), ("path", "label", "group")]),
    order=st.randoms(use_true_random=False),
)
def test_any_csv_of_paths_and_labels_round_trips(registry, rows, extra, header, order):
    """Labels and file names with any characters (commas and quotes included, quoted as any CSV writer
    does), patient ids, extra columns and any column order: read back as written."""
    import csv
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "set"
        (base / "img").mkdir(parents=True)
        columns = [*header, *extra]
        order.shuffle(columns)
        with (base / "labels.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            for name, label, patient in rows:
                (base / "img" / f"{name}.png").write_bytes(PNG)
                values = dict(zip(header, (f"img/{name}.png", label, patient)))
                writer.writerow({**extra, **values})
        s = userdata(registry, "csv", file=str(base / "labels.csv"))
        assert s.classes == tuple(sorted({label for _, label, _ in rows}))
        back = {row.id: (row.label, row.group, row.finding) for row in s.table.itertuples()}
        assert back == {f"img/{name}.png": (label, patient, label) for name, label, patient in rows}
        assert all(Path(p).is_file() for p in s.table["path"])


#: the pieces a damaged CSV is made of: separators, quotes, line ends, a file that exists, odd bytes
csv_pieces = st.sampled_from([",", ";", '"', "\n", "\r\n", "\r", " ", "a.png", "img/x.png", "covid", "é", "\t", "\\"])
csv_texts = st.tuples(
    st.sampled_from(["", "path,label\n", "path,label,patient\n", "Path;Label\n", "label\n", '"path,label\n']),
    st.lists(csv_pieces, max_size=30).map("".join),
).map(lambda parts: "".join(parts).encode())


@DATA_SETTINGS
@given(content=csv_texts | st.binary(max_size=120) | st.text(max_size=60).map(lambda t: t.encode("utf-8", "replace")))
def test_a_malformed_csv_is_one_error_naming_the_file_never_an_internal_one(registry, content):
    """Whatever the file holds, the csv reader gives a data set or its own error, one that names the file."""
    import tempfile

    from benchbox.errors import DataError

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bad.csv"
        path.write_bytes(content)
        (Path(tmp) / "a.png").write_bytes(PNG)
        try:
            s = userdata(registry, "csv", file=str(path))
        except DataError as exc:
            message = str(exc)
            assert message.startswith("csv: ") and str(path) in message and "\n" not in message
        else:
            assert len(s.classes) >= 2 and len(s.table) >= 2
