import pytest

from benchbox.define.suite import load_suite
from benchbox.errors import SuiteError
from benchbox.execute.records import CellKey
from conftest import ROOT, write_suite

GOOD = """
name = "good"
seed = 1
[protocol]
k = 5
grouped = true
[training]
epochs = 2
batch_size = 4
[datasets.syn]
plugin = "synthetic"
images = 40
[backbones.a]
plugin = "torch/mobilenet_v2"
weights = "none"
input_size = [64, 64]
[backbones.b]
plugin = "keras/vgg19"
weights = "none"
cutoff = 5
[[experiments]]
datasets = ["syn"]
backbones = ["a"]
"""


def test_good_suite(tmp_path, registry):
    s = load_suite(write_suite(tmp_path / "s.toml", GOOD), registry)
    assert s.cells == [CellKey("syn", "a")]
    assert s.protocol.options["grouped"] and s.protocol.options["k"] == 5
    assert s.backbones["a"].options["cutoff"] == 10  # the study's default for MobileNet v2
    assert s.backbones["b"].options["cutoff"] == 5  # overridden by the suite
    assert s.training.learning_rate == pytest.approx(1e-3)


@pytest.mark.parametrize("path", sorted((ROOT / "suites").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_suites_validate(path, registry):
    load_suite(path, registry)


BAD = [
    ("colour = 1", "colour: unknown key; allowed:"),
    (
        '[training]\noptimiser = "adam"',
        "training.optimiser: unknown key (did you mean optimizer?); allowed: augment, batch_size, class_weight, device",
    ),
    ('[training]\noptimizer = "sgd"', "training.optimizer: unknown optimizer 'sgd'; allowed: adam"),
    ("[training]\nepochs = 0", "training.epochs: must be at least 1"),
    ('[training]\nepochs = "ten"', "training.epochs: must be an integer"),
    ('[protocol]\nkind = "loo"', "protocol.kind: unknown protocol 'loo'; available: cross-dataset, holdout, kfold"),
    ("[protocol]\nk = 1", "protocol.k: must be at least 2"),
    (
        '[probes.within-source]\ndataset = "nope"',
        "probes.within-source.dataset: 'nope' is not a data set of this suite",
    ),
    ('[explain]\nlayer = { nope = "base.6" }', "explain.layer.nope: not a backbone of this suite"),
    ('[explain]\nlayer = { a = "" }', 'explain.layer.a: must be "auto" or a layer/module name'),
    ("[protocol]\ntest_fraction = 0.3", 'protocol.test_fraction: applies to kind = "holdout" only'),
    ('[protocol]\nkind = "holdout"\nk = 5', 'protocol.k: applies to kind = "kfold" or "cross-dataset" only'),
    ('[datasets.x]\nplugin = "mnist"', "datasets.x.plugin: unknown dataset plugin 'mnist'; available:"),
    (
        '[backbones.x]\nplugin = "keras/resnet5000x"',
        "backbones.x.plugin: unknown backbone plugin 'keras/resnet5000x'; ",
    ),
    (
        '[backbones.x]\nplugin = "keras/vgg19"\ncutof = 3',
        "backbones.x.cutof: unknown key (did you mean cutoff?); allowed:",
    ),
    ('[backbones.x]\nplugin = "keras/vgg19"\nhead = [0]', "head: must be a list of positive integers"),
    ('[backbones.x]\nplugin = "keras/vgg19"\npooling = "sum"', "pooling: must be one of avg, max"),
    ('[backbones.x]\nplugin = "keras/vgg19"\ninput_size = [10, 10]', "backbones.x.input_size: must be [height, width]"),
    ('[backbones.x]\nplugin = "keras/vgg19"\nweights = "/no/such/file.h5"', "weights: '/no/such/file.h5' is neither"),
    ('[backbones.x]\nplugin = "torch/vgg19"\ncutoff = 99', "cutoff: 99 is beyond the depth of vgg19 (22 Keras layers)"),
    ('[[experiments]]\ndatasets = ["syn"]\nbackbones = ["nope"]', "experiments[0].backbones: unknown name 'nope'"),
    ('evaluators = ["auc"]', "evaluators[0]: unknown evaluator 'auc'; available: calibration, clinical, paper"),
]


@pytest.mark.parametrize("extra,message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_each_bad_suite_names_key_and_choices(tmp_path, registry, extra, message):
    base = 'name = "bad"\n' + ("" if extra.startswith("[datasets") else '[datasets.syn]\nplugin = "synthetic"\n')
    if not extra.startswith("[backbones"):
        base += '[backbones.a]\nplugin = "torch/mobilenet_v2"\n'
    # top-level keys must come before the tables
    text = (extra + "\n" + base) if not extra.startswith("[") else (base + extra + "\n")
    path = write_suite(tmp_path / "bad.toml", text)
    with pytest.raises(SuiteError) as exc:
        load_suite(path, registry)
    assert str(path) in str(exc.value)
    assert any(message in p for p in exc.value.problems), exc.value.problems


def test_every_problem_reported_at_once(tmp_path, registry):
    path = write_suite(tmp_path / "s.toml", 'seed = "x"\n[training]\nepochs = 0\n[protocol]\nk = 1\n')
    with pytest.raises(SuiteError) as exc:
        load_suite(path, registry)
    text = "\n".join(exc.value.problems)
    for key in ("name:", "seed:", "training.epochs:", "protocol.k:", "datasets:", "backbones:"):
        assert key in text


@pytest.mark.parametrize(
    "protocol", ["k = 1", "k = 0", 'kind = "holdout"\ntest_fraction = 1.5', 'kind = "kfold"\nk = "five"']
)
def test_a_bad_protocol_is_reported_not_used_to_draw_folds_when_validate_reads_the_data(tmp_path, registry, protocol):
    """validate with the data used to crash on k = 1: the folds were drawn under the flagged protocol."""
    text = f'name = "p"\n[protocol]\n{protocol}\n[datasets.syn]\nplugin = "synthetic"\nimages = 30\n'
    path = write_suite(tmp_path / "p.toml", text + '[backbones.a]\nplugin = "torch/mobilenet_v2"\n')
    with pytest.raises(SuiteError) as exc:
        load_suite(path, registry, check_data=True)
    assert [p for p in exc.value.problems if p.startswith("protocol.")], exc.value.problems


def test_explain_layer_per_backbone_reaches_each_backbones_folds(tmp_path, registry):
    from benchbox_explain.maps import explain_layer

    text = GOOD + '[explain]\nlayer = { a = "base.6" }\n'
    s = load_suite(write_suite(tmp_path / "s.toml", text), registry)
    assert s.name == "good"  # the suite's own name, not a layer's
    settings = s.inspectors["explain"].options
    assert explain_layer(settings, "a") == "base.6" and explain_layer(settings, "b") == "auto"
    assert explain_layer({"layer": "out_relu"}, "b") == "out_relu"


def test_one_mistake_one_line(tmp_path, registry):
    text = 'name = "s"\n[datasets.syn]\nplugin = "synthetic"\n[backbones.a]\nplugin = "torch/mobilenet_v2"\n'
    with pytest.raises(SuiteError) as exc:
        load_suite(write_suite(tmp_path / "s.toml", text + "input_size = 64\n"), registry)
    assert [p for p in exc.value.problems if "input_size" in p] == ["backbones.a.input_size: must be a list, got 64"]


def test_not_toml(tmp_path, registry):
    with pytest.raises(SuiteError, match="not valid TOML"):
        load_suite(write_suite(tmp_path / "s.toml", "name = \n"), registry)


def test_missing_file(tmp_path, registry):
    with pytest.raises(SuiteError, match="cannot read"):
        load_suite(tmp_path / "nope.toml", registry)
