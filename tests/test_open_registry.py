"""Every closed choice is a plugin: a third party's package (tests/example_plugin, pip-installed into a
folder of its own) adds a split strategy, an output format and a tracker with no edit to benchbox, and
a suite uses all three through the real CLI. Also: the registry's lookups and their error messages."""

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from benchbox.plugins import load_registry
from conftest import run_batch, run_cli, write_suite

SOURCES = ("hospital-a", "hospital-b", "hospital-c")
CLASSES = ("covid", "normal", "pneumonia")


def csv_data_set(root, per_class=6):
    """Three sources, each holding every class: images whose brightness says the class."""
    rng = np.random.default_rng(0)
    rows = ["path,label,patient,source"]
    for s, source in enumerate(SOURCES):
        for c, label in enumerate(CLASSES):
            for i in range(per_class):
                img = rng.integers(0, 60, (36, 36)) + 60 * c + 10 * s
                name = f"{source}-{label}-{i}.png"
                Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / name)
                rows.append(f"{name},{label},{source}-p{c}{i // 2},{source}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


SUITE = """
name = "open"
seed = 1
output_dir = "{out}"
evaluators = ["paper"]

[protocol]
kind = "leave-one-source-out"

[training]
epochs = 1
batch_size = 8

[datasets.sites]
plugin = "csv"
file = "{csv}"
positive_class = "covid"

[backbones.logreg]
plugin = "example/pixel_logreg"
input_size = [32, 32]

[tracking.jsonl]
path = "events.jsonl"
"""


def test_a_third_party_split_format_and_tracker_work_through_the_cli(tmp_path, example_env):
    csv = csv_data_set(tmp_path)
    suite = write_suite(tmp_path / "open.toml", SUITE.format(out=tmp_path / "runs", csv=csv))
    run = tmp_path / "run"
    results = run_batch(  # validate, run, then the two views, in one process that sees the plugin
        {
            "validate": (["validate", suite], {"env": example_env}),
            "run": (["run", suite, "--run-dir", run], {"env": example_env}),
            **{view: ([view, run, "--format", "yaml"], {"env": example_env}) for view in ("report", "leaderboard")},
        }
    )
    valid, res = results["validate"], results["run"]
    assert valid.returncode == 0, valid.stderr
    assert "leave one source out" in valid.stdout
    assert res.returncode == 0, res.stderr
    # the split strategy: one fold per source, each fold's test images from that source only
    split = json.loads((run / "splits" / "sites.json").read_text())
    fold_of = dict(zip(split["ids"], split["fold"]))
    by_fold = {}
    for line in csv.read_text().splitlines()[1:]:
        path, _, _, source = line.split(",")
        by_fold.setdefault(next(f for i, f in fold_of.items() if i.endswith(path) or i == path), set()).add(source)
    assert sorted(by_fold) == [0, 1, 2] and all(len(s) == 1 for s in by_fold.values())
    assert len(list((run / "folds").glob("*.json"))) == 3
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["protocol"] == {"kind": "leave-one-source-out", "min_images": 1}
    assert manifest["protocol_label"] == "leave one source out"
    # the tracker: one start, one line per fold, one end
    events = [json.loads(line)["event"] for line in (run / "events.jsonl").read_text().splitlines()]
    assert events == ["start", "fold", "fold", "fold", "end"]
    # the output format: a file in every run directory, and --format for report and leaderboard
    written = yaml.safe_load((run / "report.yaml").read_text())
    assert written["cells"][0]["backbone"] == "logreg"
    report, board = results["report"], results["leaderboard"]
    assert report.returncode == 0, report.stderr
    assert yaml.safe_load(report.stdout)["cells"][0]["folds"] == 3
    assert board.returncode == 0, board.stderr
    entries = yaml.safe_load(board.stdout)["entries"]
    assert entries[0]["protocol"] == "leave one source out" and entries[0]["rank"] == 1
    # without the plugin, the run's protocol is named as unknown, with what is available
    plain = run_cli("validate", suite)
    assert plain.returncode == 1
    assert "protocol.kind: unknown protocol 'leave-one-source-out'" in plain.stderr
    assert "tracking.jsonl: unknown tracker 'jsonl'" in plain.stderr


def test_leave_one_source_out_refuses_a_class_that_only_one_source_has(tmp_path, example_env):
    csv = csv_data_set(tmp_path)
    lines = csv.read_text().splitlines()
    # hospital-c's pneumonia images become the only ones: the other sources lose theirs
    kept = [lines[0]] + [ln for ln in lines[1:] if "pneumonia" not in ln or "hospital-c" in ln]
    csv.write_text("\n".join(kept) + "\n")
    suite = write_suite(tmp_path / "open.toml", SUITE.format(out=tmp_path / "runs", csv=csv))
    res = run_cli("validate", suite, env=example_env)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    said = " ".join(res.stderr.split())
    assert "data set sites: protocol: leaving source 'hospital-c' out leaves class(es) [2]" in said


def test_registry_lookups_suggest_the_closest_name():
    registry = load_registry()
    for kind, name, wrong in (
        ("split strategy", "holdout", "holdot"),
        ("executor", "local", "locl"),
        ("output format", "markdown", "markdwn"),
        ("tracker", "mlflow", "mlfow"),
    ):
        assert name in registry.table(kind)
        with pytest.raises(Exception, match=f"unknown {kind} '{wrong}'; did you mean {name}"):
            registry.get(kind, wrong)
    assert registry.canonical("output format", "md") == "markdown"
    assert registry.get("output format", "tex").name == "latex"


def test_a_protocol_option_of_another_strategy_is_named_as_such(tmp_path, registry):
    from benchbox.define.suite import load_suite
    from benchbox.errors import SuiteError
    from conftest import TINY_SUITE

    body = TINY_SUITE.format(name="t", out=tmp_path / "runs", backbones="").replace(
        "[protocol]", "[protocol]\ntest_fraction = 0.3\nbogus = 1"
    )
    with pytest.raises(SuiteError) as exc:
        load_suite(write_suite(tmp_path / "s.toml", body), registry)
    text = str(exc.value)
    assert 'protocol.test_fraction: applies to kind = "holdout" only' in text
    assert "protocol.bogus: unknown key; allowed: grouped, k, kind, repeats, stratified" in text


def test_ray_missing_is_a_clear_error(monkeypatch):
    """The ray executor where Ray is not installed: the install command, not an ImportError (a fast test:
    it starts no Ray, unlike tests/test_ray.py)."""
    import sys

    from benchbox.errors import BenchboxError
    from benchbox_executors import Ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(BenchboxError, match=r"pip install 'benchbox\[ray\]'"):
        Ray().run([], {}, {}, None, None, None, dict(Ray.defaults), None)
