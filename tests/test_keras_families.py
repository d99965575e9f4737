"""keras/<application>: every keras.applications network as a backbone (issue 13, Keras side)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from benchbox.errors import BenchboxError, WeightsError
from conftest import assert_mentions, needs_keras, run_cli, tiny_suite

pytestmark = needs_keras


@pytest.fixture(scope="module")
def registry():
    from benchbox.plugins import load_registry

    return load_registry()


@pytest.mark.parametrize(
    "cls, module, name",
    [
        ("ResNet50", "resnet", "resnet50"),
        ("ResNet101V2", "resnet_v2", "resnet101_v2"),
        ("DenseNet121", "densenet", "densenet121"),
        ("EfficientNetB0", "efficientnet", "efficientnet_b0"),
        ("EfficientNetV2S", "efficientnet_v2", "efficientnet_v2_s"),
        ("ConvNeXtTiny", "convnext", "convnext_tiny"),
        ("MobileNetV3Small", "mobilenet_v3", "mobilenet_v3_small"),
        ("NASNetMobile", "nasnet", "nasnet_mobile"),
        ("InceptionResNetV2", "inception_resnet_v2", "inception_resnet_v2"),
    ],
)
def test_names_are_written_as_a_user_types_them(cls, module, name):
    from benchbox_keras.applications import model_name

    assert model_name(cls, module) == name


def test_listing_the_family_does_not_import_tensorflow():
    code = (
        "import sys\n"
        "from benchbox.plugins import load_registry\n"
        "r = load_registry()\n"
        "names = r.backbones.family_models('keras')\n"
        "assert 'keras/resnet50' in r.backbones\n"
        "print(len(names), 'tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    count, tf_loaded, keras_loaded = out.stdout.split()
    assert int(count) >= 30 and tf_loaded == "False" and keras_loaded == "False"


def test_every_application_is_listed_and_the_study_networks_stay_explicit(registry):
    names = registry.backbones.family_models("keras")  # (listing() would ask every family, timm's too)
    for name in ("keras/resnet50", "keras/densenet121", "keras/efficientnet_b0", "keras/convnext_tiny"):
        assert name in names
    from benchbox_keras import KerasBackbone
    from benchbox_keras.families import KerasApplicationBackbone

    study = registry.get("backbone", "keras/vgg19")
    assert type(study) is KerasBackbone and "cutoff" in study.defaults and "freeze" not in study.defaults
    member = registry.get("backbone", "keras/mobilenet_v3_small")
    assert isinstance(member, KerasApplicationBackbone) and member.defaults["freeze"] == "none"
    assert "keras/vgg19" in names  # the family could build it, but the study's explicit one wins


def test_an_unknown_application_names_the_closest_ones(registry):
    with pytest.raises(BenchboxError, match=r"did you mean keras/resnet50"):
        registry.get("backbone", "keras/resnet5")


def test_freeze_values_are_checked_before_any_network_is_built(registry):
    b = registry.get("backbone", "keras/resnet50")
    assert b.check_options({**b.defaults, "freeze": "conv4_block6_out"}) == []
    assert any("freeze" in p for p in b.check_options({**b.defaults, "freeze": 1.5}))
    assert any("set one of them" in p for p in b.check_options({**b.defaults, "freeze": 0.5, "cutoff": 10}))


def test_a_suite_may_write_freeze_as_a_fraction(registry, tmp_path):
    """option_types: freeze = 0.5 (a float where the default is text) is accepted by the suite."""
    from benchbox.define.suite import load_suite

    body = '[backbones.r]\nplugin = "keras/resnet50"\nweights = "none"\nfreeze = 0.5\n'
    suite = load_suite(tiny_suite(tmp_path, body), registry)
    assert suite.backbones["r"].options["freeze"] == 0.5


@pytest.mark.slow
def test_kit_passes_for_a_small_application_with_part_frozen(registry):
    """VGG16, the family's shallowest graph, 3 classes only: one build and trace, then the kit's
    determinism fit on the same model reset to the seed (the engine keeps one model per cell);
    ResNet50 and DenseNet121 (175/427 layers) cost minutes on 2 shared cores, so they get build-only
    checks below."""
    from benchbox.testing import check_backbone

    b = registry.get("backbone", "keras/vgg16")
    check_backbone(b, options={"input_size": [32, 32], "freeze": 0.5}, class_counts=(3,))


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, freeze, last, preprocessing",
    [
        ("resnet50", "conv3_block4_out", "conv3_block4_out", "resnet.preprocess_input: (x - [103.939, 116.779"),
        ("densenet121", 0.25, None, "densenet.preprocess_input: (x - [123.675, 116.28, 103.53])"),
        ("efficientnet_b0", "all", "top_activation", "rescales inside itself"),
    ],
)
def test_members_build_with_their_own_preprocessing_and_freeze(registry, name, freeze, last, preprocessing):
    """Build-only (a kit run of ResNet50/DenseNet121 costs ~1 min on 2 cores): the frozen prefix,
    the preprocessing each application's preprocess_input applies, and what describe reports."""
    from benchbox_keras import engine

    keras = engine.import_keras()
    b = registry.get("backbone", f"keras/{name}")
    options = {**b.defaults, "weights": "none", "input_size": [32, 32], "freeze": freeze}
    model, base = engine.build_model(name, options, 3, seed=0)
    cutoff = engine.frozen_cutoff(name, options, base)
    assert all(not layer.trainable for layer in base.layers[:cutoff])
    assert all(layer.trainable for layer in base.layers[cutoff:])
    if last:
        assert base.layers[cutoff - 1].name == last
    else:  # a fraction counts the weight-carrying layers
        units = [layer for layer in base.layers if layer.weights]
        assert sum(1 for layer in base.layers[:cutoff] if layer.weights) == round(0.25 * len(units))
    frozen_dropout = [layer for layer in base.layers[:cutoff] if isinstance(layer, keras.layers.Dropout)]
    assert all(layer.rate == 0 for layer in frozen_dropout)  # EfficientNet's drop-connect is off when frozen
    assert model.output.shape[-1] == 3

    # the Normalization layer does what the application's own preprocess_input does to a gray pixel
    pixels = np.array([0.0, 100.0, 255.0], "float32").reshape(3, 1, 1, 1).repeat(3, axis=-1)
    module = getattr(keras.applications, engine.application(name)[1])
    ours = np.asarray(model.get_layer("imagenet_preprocess")(pixels))
    assert np.allclose(ours, module.preprocess_input(pixels.copy()), atol=1e-4)

    if name != "resnet50":
        return  # describe builds again: once is enough
    facts = b.describe(options, (32, 32))
    assert facts["last_frozen_layer"] == last and facts["frozen_layers"].startswith("48 of 106 weight-carrying")
    assert facts["cutoff"] == cutoff and facts["params_frozen"] + facts["params_trainable"] == facts["params_total"]
    assert preprocessing in facts["preprocessing"] and "weight-carrying layers" in facts["frozen_layers"]


@pytest.mark.slow
def test_frozen_weights_and_batchnorm_statistics_do_not_move_in_training(registry):
    from benchbox_keras import engine

    keras = engine.import_keras()
    b = registry.get("backbone", "keras/mobilenet_v3_small")
    opts = {**b.defaults, "weights": "none", "input_size": [32, 32], "freeze": "expanded_conv_2_add", "head": [8]}
    model, base = engine.build_model("mobilenet_v3_small", opts, 2, seed=5)
    cutoff = engine.frozen_cutoff("mobilenet_v3_small", opts, base)
    before = [layer.get_weights() for layer in base.layers]
    rng = np.random.default_rng(0)
    x = engine.as_input(rng.integers(0, 255, (16, 32, 32), dtype=np.uint8))
    # the whole model in training mode (as without the prefix cache); eager, to skip seconds of tracing
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy", run_eagerly=True)
    model.fit(x, np.arange(16) % 2, epochs=1, batch_size=8, verbose=0)
    frozen_bn = moved = 0
    for i, (layer, old) in enumerate(zip(base.layers, before)):
        same = all(np.array_equal(w0, w1) for w0, w1 in zip(old, layer.get_weights()))
        if i < cutoff:
            assert same, f"frozen layer {layer.name} changed in training"
            frozen_bn += isinstance(layer, keras.layers.BatchNormalization)
        elif old and not same:
            moved += 1
    assert frozen_bn >= 5 and moved > 10  # frozen BN (moving statistics included) fixed; the rest trained


@pytest.mark.slow
def test_a_freeze_layer_that_does_not_exist_stops_prepare_with_the_closest_names(registry):
    b = registry.get("backbone", "keras/resnet50")
    with pytest.raises(
        BenchboxError, match=r"no layer or module named 'conv4_block6'.*did you mean .*conv4_block6_out"
    ):
        b.prepare({**b.defaults, "weights": "none", "input_size": [32, 32], "freeze": "conv4_block6"})


@pytest.mark.slow
def test_offline_imagenet_weights_fail_with_the_url_cache_path_and_the_alternatives(
    registry, tmp_path, monkeypatch, no_network
):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    b = registry.get("backbone", "keras/densenet121")
    with pytest.raises(WeightsError) as exc:
        b.prepare({**b.defaults, "weights": "imagenet", "input_size": [32, 32]})
    assert_mentions(
        str(exc.value),
        "keras/densenet121",
        "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
        str(tmp_path / "keras" / "models"),
        "https://storage.googleapis.com/",
        'weights = "none"',
        "benchbox weights fetch keras/densenet121",
        ".weights.h5",
    )


@pytest.mark.slow
def test_a_no_top_weights_file_of_the_same_network_loads(registry, tmp_path):
    from benchbox_keras import engine

    b = registry.get("backbone", "keras/mobilenet_v3_small")
    opts = {**b.defaults, "weights": "none", "input_size": [32, 32], "freeze": 0.5}
    _, base = engine.build_model("mobilenet_v3_small", opts, 3, seed=1)
    path = tmp_path / "mine.weights.h5"
    base.save_weights(str(path))  # what keras.applications' own no-top files hold
    b.prepare({**opts, "weights": str(path)})
    _, loaded = engine.build_model("mobilenet_v3_small", {**opts, "weights": str(path)}, 3, seed=2)
    assert np.array_equal(loaded.get_layer("conv").kernel.numpy(), base.get_layer("conv").kernel.numpy())


@pytest.mark.slow
def test_run_end_to_end_with_a_family_member_and_a_freeze_setting(tmp_path):
    """VGG16, not DenseNet121: the same run with keras/densenet121 took 491 s on 2 shared cores
    (Keras traces the 427-layer graph per fold)."""
    suite = tiny_suite(
        tmp_path,
        '[backbones.v16]\nplugin = "keras/vgg16"\nweights = "none"\ninput_size = [32, 32]\nfreeze = "block3_pool"\n',
    )
    suite.write_text(suite.read_text().replace("k = 3", "k = 2").replace("images = 30", "images = 24"))
    res = run_cli("run", suite)
    assert res.returncode == 0, res.stderr + res.stdout
    assert "v16" in res.stdout and "Sensitivity" in res.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()
    records = [json.loads(p.read_text()) for p in (run_dir / "folds").glob("*.json")]
    assert len(records) == 2
    info = records[0]["info"]
    assert info["params_frozen"] > 0 and info["params_trainable"] > 0
    assert info["prefix_cache"] in ("computed", "hit")  # the frozen prefix is cached as for the study's
