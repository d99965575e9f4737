"""The plugin author's path: the documented example works on grayscale and colour data, a backbone
can declare the channels it takes (the run refuses others before training), a backbone that never
reports epochs still shows its fold's training as done, and `backbones describe` says when a plugin
has no describe()."""

import re
import types

import numpy as np
import pytest
from PIL import Image

from benchbox import hookimpl
from benchbox.contracts import Backbone, FoldJob, TrainingConfig
from benchbox.define.suite import load_suite
from benchbox.errors import BenchboxError, PluginError, SuiteError
from benchbox.execute.harness import run_fold
from benchbox.execute.runner import Reporter, run_suite
from benchbox.plugins import load_registry
from benchbox.testing import check_backbone
from conftest import ROOT, write_suite

DOC = (ROOT / "docs" / "plugins.md").read_text()


def doc_backbone() -> Backbone:
    """The NearestCentroid of docs/plugins.md, exactly as the page shows it."""
    block = re.findall(r"```python\n(.*?)```", DOC, re.DOTALL)[0]
    module = types.ModuleType("plugins_md_centroid")
    exec(compile(block, "docs/plugins.md (python block 1)", "exec"), module.__dict__)
    return module.NearestCentroid()


class Mean(Backbone):
    """A numpy backbone (class means of the mean brightness) that never calls job.progress."""

    name = "toy/mean"
    framework = "numpy"
    defaults = {"input_size": [32, 32], "weights": "none"}

    def __init__(self, accepted=(1, 3), report_epochs=False):
        self.accepted_channels = accepted
        self.report_epochs = report_epochs
        self.fits = 0

    def fit(self, job):
        self.fits += 1
        if self.report_epochs and job.progress:
            for epoch in range(job.training.epochs):
                job.progress(epoch + 1, job.training.epochs)
        x = job.x_train.reshape(len(job.x_train), -1).mean(axis=1)
        classes = range(job.num_classes)
        return np.array([x[job.y_train == c].mean() if (job.y_train == c).any() else x.mean() for c in classes])

    def predict(self, model, images, ids=None):
        x = images.reshape(len(images), -1).mean(axis=1)
        logits = -np.abs(x[:, None] - model[None]) / 10
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


def fold(channels=1, epochs=2, progress=None) -> FoldJob:
    rng = np.random.default_rng(0)
    shape = (16, 16) if channels == 1 else (16, 16, 3)
    x = rng.integers(0, 255, (8, *shape), dtype=np.uint8)
    return FoldJob(x, np.arange(8) % 2, x[:4], 2, {"input_size": [16, 16]}, TrainingConfig(epochs, 4), 0, progress)


# --- 1. the documented example -------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_the_documented_backbone_passes_the_kit_on_grayscale_and_rgb(channels):
    check_backbone(doc_backbone(), options={"input_size": [32, 32]}, channels=channels)


def test_the_documented_check_backbone_signature_is_the_real_one():
    import inspect

    params = inspect.signature(check_backbone).parameters.values()
    real = ", ".join(p.name if p.default is p.empty else f"{p.name}={p.default!r}" for p in params)
    assert f"`benchbox.testing.check_backbone({real})`" in DOC


# --- 2. a backbone that declares its channels ----------------------------------------------------


def test_a_grayscale_only_backbone_is_refused_an_rgb_fold_before_fit():
    backbone = Mean(accepted=(1,))
    with pytest.raises(PluginError) as err:
        run_fold(backbone, "toy/mean", fold(channels=3), "rgbset x toy fold 0")
    text = str(err.value)
    assert "toy/mean takes grayscale images only" in text and "rgbset x toy fold 0 is RGB" in text
    assert 'color = "gray"' in text and backbone.fits == 0  # refused before any training
    assert run_fold(backbone, "toy/mean", fold(channels=1), "w").probabilities.shape == (4, 2)


def test_an_rgb_only_backbone_is_refused_a_grayscale_fold():
    with pytest.raises(PluginError, match=r'takes RGB images only .* is grayscale: set color = "rgb"'):
        run_fold(Mean(accepted=(3,)), "toy/mean", fold(channels=1), "gray x toy fold 0")


def test_the_kit_checks_the_declared_channels():
    check_backbone(Mean(accepted=(3,)), class_counts=(2,))  # default: the channels it takes (RGB here)
    with pytest.raises(AssertionError, match=r"accepted_channels = \(1,\).*does not take RGB"):
        check_backbone(Mean(accepted=(1,)), class_counts=(2,), channels=3)
    with pytest.raises(AssertionError, match="accepted_channels = \\(2,\\); a backbone takes"):
        check_backbone(Mean(accepted=(2,)), class_counts=(2,))


def rgb_folder(root, n=6):
    for name, colour in (("red", (200, 0, 0)), ("green", (0, 160, 0))):
        (root / name).mkdir(parents=True)
        for i in range(n):
            img = np.zeros((20, 20, 3), dtype=np.uint8)
            img[i : i + 10, 5:15] = colour
            Image.fromarray(img).save(root / name / f"p{i}_{name}.png")
    return root


class ToyPlugin:
    def __init__(self, backbone):
        self.backbone = backbone

    @hookimpl
    def benchbox_backbones(self):
        return [self.backbone]


def test_a_run_of_a_grayscale_only_backbone_on_an_rgb_data_set_names_backbone_data_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCHBOX_CACHE", str(tmp_path / "cache"))
    backbone = Mean(accepted=(1,))
    registry = load_registry(extra_plugins=[ToyPlugin(backbone)])
    path = write_suite(
        tmp_path / "rgb.toml",
        f"""
name = "rgb"
output_dir = "{tmp_path / "runs"}"
[protocol]
k = 2
[training]
epochs = 1
[datasets.colours]
plugin = "folder"
root = "{rgb_folder(tmp_path / "images")}"
color = "rgb"
[backbones.mean]
plugin = "toy/mean"
""",
    )
    with pytest.raises(BenchboxError) as err:
        run_suite(load_suite(path, registry), registry)
    text = str(err.value)  # refused before any image is decoded or fold trained
    assert "backbones.mean: toy/mean takes grayscale images only" in text
    assert "data set 'colours' (datasets.colours) is RGB" in text
    assert 'set color = "gray"' in text and backbone.fits == 0
    assert not (tmp_path / "runs").exists()  # no run directory for a suite that cannot run
    with pytest.raises(SuiteError) as err:  # and `benchbox validate` says the same
        load_suite(path, registry, check_data=True)
    assert any("toy/mean takes grayscale images only" in p for p in err.value.problems)


# --- 4. progress of a backbone that reports no epochs ---------------------------------------------


def test_a_fold_that_never_reports_epochs_shows_them_done_at_its_end():
    calls = []
    run_fold(Mean(), "toy/mean", fold(epochs=2, progress=lambda d, t: calls.append((d, t))), "w")
    assert calls == [(2, 2)]


def test_a_fold_that_reports_its_epochs_is_not_given_an_extra_call():
    calls = []
    run_fold(Mean(report_epochs=True), "toy/mean", fold(epochs=3, progress=lambda d, t: calls.append((d, t))), "w")
    assert calls == [(1, 3), (2, 3), (3, 3)]


class Recorder(Reporter):
    def __init__(self):
        self.events = []

    def fold_start(self, cell, fold, epochs):
        self.events.append(("start", fold, epochs))

    def epoch(self, done, total):
        self.events.append(("epoch", done, total))

    def fold_end(self, record):
        self.events.append(("end", record.fold))


def test_a_numpy_backbone_in_a_run_reports_each_fold_trained(tmp_path):
    registry = load_registry(extra_plugins=[ToyPlugin(Mean())])
    path = write_suite(
        tmp_path / "syn.toml",
        f"""
name = "syn"
output_dir = "{tmp_path / "runs"}"
[protocol]
k = 2
[training]
epochs = 2
[datasets.syn]
plugin = "synthetic"
images = 12
patients = 6
[backbones.mean]
plugin = "toy/mean"
""",
    )
    reporter = Recorder()
    run_suite(load_suite(path, registry), registry, reporter=reporter)
    assert reporter.events == [
        ("start", 0, 2),
        ("epoch", 2, 2),
        ("end", 0),
        ("start", 1, 2),
        ("epoch", 2, 2),
        ("end", 1),
    ]


# --- 5. `backbones describe` of a plugin without describe() ---------------------------------------


class Described(Mean):
    name = "toy/described"

    def describe(self, options, input_size):
        return {"framework": "numpy", "params_total": 2}


@pytest.mark.parametrize("backbone, says", [(Mean(), True), (Described(), False)])
def test_describe_says_when_a_plugin_has_no_describe(backbone, says, capsys, monkeypatch):
    import benchbox.cli as cli

    monkeypatch.setattr("benchbox.plugins.load_registry", lambda *a, **k: load_registry([ToyPlugin(backbone)]))
    try:
        cli.main(["backbones", "describe", backbone.name, "--input", "32x32"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    out = capsys.readouterr().out
    assert "numpy" in out
    assert (f"{backbone.name} has no describe()" in out) is says


# --- 3. docs/suites.md lists every option of the synthetic data set ------------------------------


def test_the_synthetic_row_of_the_options_table_lists_every_option():
    row = next(
        line for line in (ROOT / "docs" / "suites.md").read_text().splitlines() if line.startswith("| `synthetic`")
    )
    defaults = load_registry().get("dataset", "synthetic").defaults
    missing = [key for key in defaults if f"`{key}`" not in row]
    assert not missing, f"docs/suites.md's synthetic row lacks {missing}"


def shown_test(function: str) -> str:
    """The test module docs/plugins.md shows that defines ``function``."""
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", DOC, re.DOTALL | re.MULTILINE)
    return next(text for lang, text in blocks if f"def {function}(" in text)


def test_the_centroid_conformance_test_the_doc_shows_runs(monkeypatch):
    import benchbox.plugins

    centroid = ToyPlugin(doc_backbone())
    monkeypatch.setattr(benchbox.plugins, "load_registry", lambda: load_registry(extra_plugins=[centroid]))
    module = {}
    exec(compile(shown_test("test_conformance_grayscale_and_rgb"), "docs/plugins.md", "exec"), module)
    module["test_conformance_grayscale_and_rgb"]()


def test_the_scaffold_test_the_doc_shows_is_the_one_written():
    from benchbox.scaffold import TEST

    assert shown_test("test_conformance") == TEST.format(short="resnet")
