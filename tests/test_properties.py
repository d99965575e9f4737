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
