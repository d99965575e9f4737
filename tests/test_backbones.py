"""Every one of the ten first-party backbones, at a small input size with random weights."""

import numpy as np
import pytest

from benchbox.contracts import TrainingConfig
from benchbox.testing import check_backbone
from benchbox_engine_common.networks import STUDY
from conftest import fit_predict, needs_keras, needs_torch

pytestmark = pytest.mark.slow  # builds and trains every real network

# the smallest inputs each network accepts, keeping the suite fast
SMALL = {
    "vgg19": [32, 40],
    "mobilenet_v2": [32, 40],
    "inception_v3": [75, 80],
    "xception": [71, 80],
    "inception_resnet_v2": [75, 80],
}
NETWORKS = list(STUDY)


def small_options(backbone, network, **extra):
    return {**backbone.defaults, "weights": "none", "input_size": SMALL[network], **extra}


def batch(size, n=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (n, *size), dtype=np.uint8), np.arange(n) % 3


@needs_keras
@pytest.mark.parametrize("network", NETWORKS)
def test_keras_cutoff_freezes_exactly_cutoff_layers_and_their_batchnorm(network):
    from benchbox_keras import engine

    keras = engine.import_keras()
    options = small_options(_backbone("keras", network), network)
    model, base = engine.build_model(network, options, num_classes=3, seed=0)
    cutoff = options["cutoff"]
    assert sum(not layer.trainable for layer in base.layers) == cutoff
    assert all(not layer.trainable for layer in base.layers[:cutoff])
    # the head as asked: hidden Dense layers, Dropout between two of them, softmax output
    dense = [layer.units for layer in model.layers if layer.name.startswith("head_dense")]
    assert dense == STUDY[network]["head"]
    assert any(layer.name.startswith("head_dropout") for layer in model.layers) == (len(dense) >= 2)
    assert model.layers[-1].units == 3

    frozen = {w.path: np.array(w.numpy()) for layer in base.layers[:cutoff] for w in layer.weights}
    trainable = {w.path: np.array(w.numpy()) for w in model.trainable_weights}
    # one eager step: what is frozen does not depend on tracing, which costs ~20 s per network here
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy", run_eagerly=True)
    x, y = batch(options["input_size"])
    model.fit(engine.as_input(x), y, epochs=1, batch_size=4, verbose=0)
    after = {w.path: np.array(w.numpy()) for w in model.weights}
    assert all(np.array_equal(after[k], v) for k, v in frozen.items()), "a frozen weight or BN statistic changed"
    assert any(not np.array_equal(after[k], v) for k, v in trainable.items()), "no trainable weight changed"


@needs_torch
@pytest.mark.parametrize("network", NETWORKS)
def test_torch_cutoff_freezes_mapped_modules_and_their_batchnorm(network):
    import torch

    from benchbox_torch import engine, keras_weighted_layers

    options = small_options(_backbone("torch", network), network)
    net, info = engine.build_model(network, options, num_classes=3, seed=0)
    units = engine.weight_units(net.base)
    n_frozen = keras_weighted_layers(network, options["cutoff"])
    assert info["frozen_units"] == n_frozen
    assert all(not p.requires_grad for _, m in units[:n_frozen] for p in m.parameters())
    assert all(p.requires_grad for _, m in units[n_frozen:] for p in m.parameters())
    linear = [m.out_features for m in net.head if isinstance(m, torch.nn.Linear)]
    assert linear == STUDY[network]["head"] + [3]
    assert any(isinstance(m, torch.nn.Dropout) for m in net.head) == (len(STUDY[network]["head"]) >= 2)

    frozen_names = {name for name, m in units[:n_frozen]}
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = batch(options["input_size"])
    engine.train(net, x, y, TrainingConfig(epochs=1, batch_size=4, learning_rate=1e-2), seed=0)
    after = net.state_dict()
    prefix = "base."
    for key, value in before.items():
        owner = key[len(prefix) :].rsplit(".", 1)[0] if key.startswith(prefix) else None
        if owner in frozen_names:
            assert torch.equal(after[key], value), f"frozen {key} changed"
    changed = [k for k, v in before.items() if k.startswith("head.") and not torch.equal(after[k], v)]
    assert changed, "the head did not train"


def _backbone(framework, network):
    from benchbox.plugins import load_registry

    return load_registry().get("backbone", f"{framework}/{network}")


@pytest.mark.parametrize(
    "framework", [pytest.param("keras", marks=needs_keras), pytest.param("torch", marks=needs_torch)]
)
@pytest.mark.parametrize("network", NETWORKS)
def test_conformance_kit(framework, network):
    backbone = _backbone(framework, network)
    # Keras traces a new graph per model (~10-30 s on 2 cores): the slow ones check 3 classes only
    slow = framework == "keras" and network in ("mobilenet_v2", "inception_v3", "inception_resnet_v2")
    options = {"input_size": SMALL[network]}
    if network == "mobilenet_v2":  # frozen deep (of 154 layers; the study's 10 is tested above): a short step
        options["cutoff"] = 140
    check_backbone(backbone, options=options, class_counts=(3,) if slow else (2, 3))


@pytest.mark.parametrize(
    "framework", [pytest.param("keras", marks=needs_keras), pytest.param("torch", marks=needs_torch)]
)
def test_cutoff_beyond_depth_states_the_depth(framework):
    from benchbox.errors import BenchboxError

    backbone = _backbone(framework, "vgg19")
    with pytest.raises(BenchboxError, match="depth of 22 Keras layers"):
        fit_predict(backbone, _job(small_options(backbone, "vgg19", cutoff=23)))


def _job(options):
    from benchbox.contracts import FoldJob

    x, y = batch(options["input_size"])
    return FoldJob(x, y, x, 3, options, TrainingConfig(epochs=1, batch_size=4), seed=0)
