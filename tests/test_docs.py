"""docs/plugins.md's examples run as written: each ```python block becomes a module registered as
a plugin, and a suite uses it through the real runner."""

import re
import types

import pytest

from benchbox.define.suite import load_suite
from benchbox.execute.runner import run_suite
from benchbox.plugins import load_registry
from benchbox.testing import check_backbone
from conftest import ROOT, write_suite

BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "plugins.md").read_text(), re.DOTALL)


def doc_module(index: int) -> types.ModuleType:
    module = types.ModuleType(f"docs_plugins_example_{index}")
    exec(compile(BLOCKS[index], f"docs/plugins.md (python block {index + 1})", "exec"), module.__dict__)
    return module


def test_the_doc_has_a_backbone_and_an_evaluator_example():
    assert (
        len(BLOCKS) == 2 and "class NearestCentroid(Backbone)" in BLOCKS[0] and "class Youden(Evaluator)" in BLOCKS[1]
    )


def test_the_backbone_example_passes_the_conformance_kit():
    registry = load_registry(extra_plugins=[doc_module(0)])
    check_backbone(registry.get("backbone", "centroid/pixels"), options={"input_size": [32, 32]})


def test_both_examples_run_in_a_suite(tmp_path):
    registry = load_registry(extra_plugins=[doc_module(0), doc_module(1)])
    path = write_suite(
        tmp_path / "doc.toml",
        f"""
name = "doc"
output_dir = "{tmp_path / "runs"}"
evaluators = ["paper", "youden"]
[protocol]
k = 3
grouped = true
[datasets.syn]
plugin = "synthetic"
images = 60
patients = 24
[backbones.centroid]
plugin = "centroid/pixels"
input_size = [64, 64]
""",
    )
    result = run_suite(load_suite(path, registry), registry)
    row = result.summary.iloc[0]
    assert row["folds"] == 3 and -1 <= row["youden_j"] <= 1 and len(row["youden_j_folds"]) == 3
    assert 0 <= row["ppv"] <= 1 and row["ppv_ci_low"] <= row["ppv"] <= row["ppv_ci_high"]
    report = (result.run_dir / "report.md").read_text()
    assert "Youden J" in report and "PPV %" in report
    assert row["accuracy_3class"] > 0.5  # the synthetic classes differ in brightness patterns: a baseline learns


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_every_block_compiles(index):
    compile(BLOCKS[index], f"block {index}", "exec")
