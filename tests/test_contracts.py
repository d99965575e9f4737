"""The core's contracts as a third party meets them: metrics an evaluator declares are rendered,
plotted and ranked with no core change; the harness, not the plugin, owns the clock; hooks are
called through pluggy and a misspelt one is an error; the core knows no plugin and no study."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchbox import hookimpl
from benchbox.contracts import Backbone, FoldJob, TrainingConfig
from benchbox.execute.harness import run_fold
from benchbox.plugins import load_registry
from conftest import ROOT, run_batch, run_cli, write_suite

SUITE = """
name = "{name}"
seed = 2
output_dir = "{out}"
evaluators = {evaluators}
[protocol]
k = 3
grouped = true
[training]
epochs = 1
[datasets.syn]
plugin = "synthetic"
images = 45
patients = 18
[backbones.lr]
plugin = "example/pixel_logreg"
input_size = [32, 40]
{extra}
"""


def suite(tmp_path, name="c", evaluators='["paper", "example-balanced"]', extra=""):
    return write_suite(
        tmp_path / f"{name}.toml", SUITE.format(name=name, out=tmp_path / "runs", evaluators=evaluators, extra=extra)
    )


@pytest.mark.slow
def test_a_third_party_metric_gets_a_column_a_plot_and_a_ranking(tmp_path, example_env):
    res = run_cli("run", suite(tmp_path), "--run-dir", tmp_path / "run", env=example_env)
    assert res.returncode == 0, res.stderr
    assert "Balanced accuracy %" in res.stdout  # its column, labelled as it declared
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Balanced accuracy %" in report and "Acc 3-class %" in report
    fold_plot = tmp_path / "run" / "plots" / "folds__syn.png"
    assert fold_plot.stat().st_size > 1000  # a panel for the metric declared with plot=True
    # a second run with a weaker backbone, ranked by the new metric
    weak = suite(tmp_path, name="w", extra="C = 0.00001")  # heavily regularised: a weaker entry
    res = run_cli("run", weak, "--run-dir", tmp_path / "run-weak", env=example_env)
    assert res.returncode == 0, res.stderr
    res = run_cli(
        "leaderboard",
        tmp_path / "run",
        tmp_path / "run-weak",
        "--metric",
        "balanced_accuracy",
        "--format",
        "json",
        env=example_env,
    )
    assert res.returncode == 0, res.stderr
    entries = sorted(json.loads(res.stdout), key=lambda e: e["rank"])
    assert [e["rank"] for e in entries] == [1, 2]
    assert entries[0]["balanced_accuracy"] >= entries[1]["balanced_accuracy"]
    bad = run_cli("leaderboard", tmp_path / "run", "--metric", "nope", env=example_env)
    assert bad.returncode == 1 and "balanced_accuracy" in bad.stderr  # the error lists what is declared


def test_a_suite_with_only_the_clinical_evaluator_renders(tmp_path, example_env):
    path = suite(tmp_path, evaluators='["clinical"]')
    results = run_batch(  # the run, then the report, in one process
        {
            "run": (["run", path, "--run-dir", tmp_path / "run"], {"env": example_env}),
            "report": (["report", tmp_path / "run", "--format", "markdown"], {"env": example_env}),
        }
    )
    res, again = results["run"], results["report"]
    assert res.returncode == 0, res.stderr
    assert "AUC" in res.stdout and "Acc 3-class" not in res.stdout
    assert again.returncode == 0 and "AUC" in again.stdout and "Traceback" not in again.stderr


class Sleepy(Backbone):
    """Predicts uniformly, sleeps in predict, and claims in info to be infinitely fast."""

    name = "test/sleepy"
    framework = "none"
    defaults = {"input_size": [32, 32]}

    def fit(self, job):
        return job.num_classes

    def predict(self, model, images, ids=None):
        import time

        time.sleep(0.2)
        return np.full((len(images), model), 1.0 / model)

    def info(self, model):
        return {"predict_seconds": 0.0, "claimed_images_per_sec": 1e9}


def test_the_harness_times_predict_itself_whatever_the_plugin_reports():
    x = np.zeros((8, 32, 32), np.uint8)
    job = FoldJob(x, np.arange(8) % 2, x[:4], 2, {"input_size": [32, 32]}, TrainingConfig(epochs=1, batch_size=4), 0)
    out = run_fold(Sleepy(), "test/sleepy", job, "a fold")
    assert out.predict_seconds >= 0.2  # the test fold's predict call, as the harness clocked it
    assert 4 / 0.3 < out.infer_images_per_sec <= 4 / 0.2  # one timed batch of 4 that sleeps 0.2 s
    assert out.info["claimed_images_per_sec"] == 1e9  # kept as the plugin's breakdown, not the headline


@pytest.mark.slow
def test_a_sleeping_third_party_backbone_is_timed_in_a_run(tmp_path, example_env):
    s = suite(tmp_path, evaluators='["paper"]').read_text().replace("example/pixel_logreg", "example/sleepy")
    (tmp_path / "s.toml").write_text(s.replace("input_size = [32, 40]", "input_size = [32, 40]\npredict_sleep = 0.3"))
    res = run_cli("run", tmp_path / "s.toml", "--run-dir", tmp_path / "run", env=example_env)
    assert res.returncode == 0, res.stderr
    records = [json.loads(p.read_text()) for p in (tmp_path / "run" / "folds").glob("*.json")]
    assert len(records) == 3
    for r in records:  # the test fold is one timed batch (after a warm-up), each call sleeping 0.3 s
        assert r["infer_images_per_sec"] < r["n_test"] / 0.3 and r["predict_seconds"] >= 0.3
        assert r["info"]["claimed_images_per_sec"] == 1e9


def test_hooks_go_through_pluggy_and_a_misspelt_hook_breaks_only_its_plugin():
    class Typo:
        @hookimpl
        def benchbox_backbonez(self):
            return []

    class Wrapper:
        calls = []

        @hookimpl(wrapper=True)
        def benchbox_run_start(self, run_dir, manifest):
            Wrapper.calls.append("before")
            yield
            Wrapper.calls.append("after")

    registry = load_registry(extra_plugins=[Typo(), Wrapper()])
    broken = dict(registry.broken)
    assert any("benchbox_backbonez" in msg and "typo" in msg for msg in broken.values())
    assert "keras/mobilenet_v2" in registry.backbones  # the others still load
    registry.call_lifecycle("benchbox_run_start", run_dir=Path("."), manifest={})
    assert Wrapper.calls == ["before", "after"]  # a hook wrapper works: pluggy calls the hooks


def test_a_raising_lifecycle_hook_names_its_plugin():
    from benchbox.errors import PluginError

    class Bad:
        @hookimpl
        def benchbox_fold_end(self, run_dir, record):
            raise ValueError("tracker is down")

    registry = load_registry(extra_plugins=[Bad()])
    with pytest.raises(PluginError, match="failed in benchbox_fold_end: ValueError: tracker is down"):
        registry.call_lifecycle("benchbox_fold_end", run_dir=Path("."), record=None)


def test_the_core_imports_no_plugin_and_parses_no_alias():
    plugin_packages = {p.name for p in (ROOT / "plugins").iterdir() if p.is_dir() and p.name.startswith("benchbox_")}
    offenders = []
    for path in (ROOT / "benchbox").rglob("*.py"):
        text = path.read_text()
        for pkg in plugin_packages:
            if re.search(rf"^\s*(from|import)\s+{pkg}\b", text, re.MULTILINE):
                offenders.append(f"{path.relative_to(ROOT)} imports {pkg}")
        if '"@"' in text:
            offenders.append(f"{path.relative_to(ROOT)} parses '@' aliases")
    assert offenders == []


def test_the_core_does_not_name_the_study():
    words = re.compile(r"covid|accuracy_3class|accuracy_2class|pneumonia", re.IGNORECASE)
    hits = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in (ROOT / "benchbox").rglob("*.py")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if words.search(line) and "scaffold" not in p.name
    ]
    assert hits == []


@pytest.mark.slow
def test_report_and_leaderboard_need_no_framework(tmp_path, example_env):
    res = run_cli("run", suite(tmp_path), "--run-dir", tmp_path / "run", env=example_env)
    assert res.returncode == 0, res.stderr
    code = (
        "import sys\nfrom benchbox.cli import main\n"
        "for argv in (['report', {!r}, '--format', 'csv'], ['leaderboard', {!r}, '--format', 'csv']):\n"
        "    try:\n        main(argv)\n    except SystemExit as e:\n        assert e.code == 0, e.code\n"
        "assert not any(m in sys.modules for m in ('tensorflow', 'torch', 'keras')), 'model code imported'\n"
    ).format(str(tmp_path / "run"), str(tmp_path / "run"))
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**__import__("os").environ, **example_env}
    )
    assert res.returncode == 0, res.stderr
