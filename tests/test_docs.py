"""docs/plugins.md's examples run as written: each ```python block becomes a module registered as
a plugin, and a suite uses it through the real runner."""

import re
import types

from benchbox.define.suite import load_suite
from benchbox.execute.runner import run_suite
from benchbox.plugins import load_registry
from conftest import ROOT, write_suite

BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "plugins.md").read_text(), re.DOTALL)


def doc_module(index: int) -> types.ModuleType:
    module = types.ModuleType(f"docs_plugins_example_{index}")
    exec(compile(BLOCKS[index], f"docs/plugins.md (python block {index + 1})", "exec"), module.__dict__)
    return module


def test_the_doc_has_a_backbone_an_evaluator_a_strategies_and_a_fold_inspector_example():
    assert (
        len(BLOCKS) == 4 and "class NearestCentroid(Backbone)" in BLOCKS[0] and "class Youden(Evaluator)" in BLOCKS[1]
    )
    assert "class BySource(SplitStrategy)" in BLOCKS[2] and "class Confidence(FoldInspector)" in BLOCKS[3]


def test_the_fold_inspector_example_keeps_a_histogram_of_each_fold(tmp_path):
    import numpy as np
    import pytest

    from benchbox.errors import SuiteError

    registry = load_registry(extra_plugins=[doc_module(0), doc_module(3)])
    body = f"""
name = "doc"
output_dir = "{tmp_path / "runs"}"
evaluators = ["paper"]
[protocol]
k = 2
[datasets.syn]
plugin = "synthetic"
images = 12
patients = 12
[backbones.centroid]
plugin = "centroid/pixels"
input_size = [32, 32]
[confidence]
"""
    with pytest.raises(SuiteError, match="confidence.bins: must be at least 1"):
        load_suite(write_suite(tmp_path / "bad.toml", body + "bins = 0\n"), registry)
    result = run_suite(load_suite(write_suite(tmp_path / "doc.toml", body + "bins = 5\n"), registry), registry)
    for record in result.records:
        kept = record.info["confidence"]
        assert 1 / 3 <= kept["mean_top"] <= 1 and kept["file"] == f"confidence/syn__centroid__fold{record.fold:02d}.npz"
        with np.load(result.run_dir / kept["file"]) as arrays:
            assert arrays["counts"].sum() == record.n_test and len(arrays["edges"]) == 6


def test_the_strategies_example_runs_a_suite(tmp_path):
    from test_open_registry import csv_data_set

    registry = load_registry(extra_plugins=[doc_module(0), doc_module(2)])
    (tmp_path / "data").mkdir()
    csv = csv_data_set(tmp_path / "data", per_class=3)
    path = write_suite(
        tmp_path / "doc.toml",
        f"""
name = "doc"
output_dir = "{tmp_path / "runs"}"
evaluators = ["paper"]
[protocol]
kind = "by-source"
[datasets.sites]
plugin = "csv"
file = "{csv}"
positive_class = "covid"
[backbones.centroid]
plugin = "centroid/pixels"
input_size = [32, 32]
[tracking.foldlog]
""",
    )
    suite = load_suite(path, registry)
    assert suite.protocol.label == "one fold per source"
    result = run_suite(suite, registry)
    assert result.summary.iloc[0]["folds"] == 3
    assert len((result.run_dir / "folds.log").read_text().splitlines()) == 3
    header = (result.run_dir / "summary.tsv").read_text().splitlines()[0].split("\t")
    assert "backbone" in header and "accuracy_3class" in header
