"""Weights: the offline ImageNet message, local files, and the real ImageNet file in ../shared."""

import shutil

import numpy as np
import pytest

from benchbox.errors import WeightsError
from conftest import WEIGHTS, assert_mentions, needs_keras, needs_torch, run_batch, run_cli

SHARED_H5 = WEIGHTS / "mobilenet_v2_0.35_224_no_top_imagenet.h5"
KERAS_NAME = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
needs_shared_weights = pytest.mark.skipif(not SHARED_H5.exists(), reason=f"{SHARED_H5} not present")


def backbone(name):
    from benchbox.plugins import load_registry

    return load_registry().get("backbone", name)


@pytest.mark.slow
@needs_keras
def test_keras_offline_imagenet_fails_with_actionable_message(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    b = backbone("keras/vgg19")
    with pytest.raises(WeightsError) as exc:
        b.prepare({**b.defaults, "weights": "imagenet"})
    assert_mentions(
        str(exc.value),
        "keras/vgg19",
        "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        str(tmp_path / "keras" / "models"),
        "https://storage.googleapis.com/",
        'weights = "none"',
        "benchbox weights fetch",
    )


@needs_torch
@pytest.mark.parametrize(
    "name,needle",
    [("torch/mobilenet_v2", "mobilenet_v2-b0353104.pth"), ("torch/xception", "huggingface.co/timm/legacy_xception")],
)
@pytest.mark.slow
def test_torch_offline_imagenet_fails_with_actionable_message(tmp_path, monkeypatch, no_network, name, needle):
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    b = backbone(name)
    with pytest.raises(WeightsError) as exc:
        b.prepare({**b.defaults, "weights": "imagenet"})
    assert needle in str(exc.value) and 'weights = "none"' in str(exc.value)


@pytest.fixture(scope="module")
def offline_runs(tmp_path_factory):
    """`benchbox run` without ImageNet weights and without a network (an empty KERAS_HOME, a dead proxy):
    a tiny VGG19 suite, then the study's paper.toml with no data either; both through the CLI's entry point
    in one process (each would import TensorFlow: 7 s of CPU)."""
    from conftest import ROOT, tiny_suite

    tmp = tmp_path_factory.mktemp("offline")
    suite = tiny_suite(tmp, '[backbones.v]\nplugin = "keras/vgg19"\ninput_size = [32, 32]\n')
    env = {"KERAS_HOME": str(tmp / "k"), "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    paper = ["run", ROOT / "suites" / "paper.toml", "--data-dir", tmp / "empty", "--run-dir", tmp / "run"]
    return run_batch({"tiny": (["run", suite], {"env": env}), "paper": (paper, {"env": env})}), tmp


@pytest.mark.slow
@needs_keras
def test_run_stops_before_training_when_weights_are_missing(offline_runs):
    results, tmp = offline_runs
    res = results["tiny"]
    assert res.returncode == 1 and "cannot start the run" in res.stderr and "backbones.v" in res.stderr
    assert "Traceback" not in res.stderr
    assert not list((tmp / "runs").glob("*/folds/*.json"))


@pytest.mark.slow
@needs_keras
def test_keras_local_weights_file_reproduces_predictions(tmp_path):
    from benchbox_keras import engine

    b = backbone("keras/mobilenet_v2")
    opts = {**b.defaults, "weights": "none", "input_size": [32, 32], "alpha": 0.35}
    model, _ = engine.build_model("mobilenet_v2", opts, 3, seed=1)
    x = engine.as_input(np.random.default_rng(0).integers(0, 255, (4, 32, 32), dtype=np.uint8))
    path = tmp_path / "model.weights.h5"
    engine.save_weights(model, path)
    fresh, _ = engine.build_model("mobilenet_v2", {**opts, "weights": str(path)}, 3, seed=2)
    assert np.array_equal(model.predict(x, verbose=0), fresh.predict(x, verbose=0))


@pytest.mark.slow
@needs_torch
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_torch_local_weights_file_reproduces_predictions(tmp_path, suffix):
    import torch

    from benchbox_torch import engine

    b = backbone("torch/mobilenet_v2")
    opts = {**b.defaults, "weights": "none", "input_size": [32, 32]}
    net, _ = engine.build_model("mobilenet_v2", opts, 3, seed=1)
    x = np.random.default_rng(0).integers(0, 255, (4, 32, 32), dtype=np.uint8)
    path = tmp_path / f"model{suffix}"
    engine.save_weights(net, path)
    fresh, _ = engine.build_model("mobilenet_v2", {**opts, "weights": str(path)}, 3, seed=2)
    assert np.array_equal(engine.predict(net, x, 4), engine.predict(fresh, x, 4))
    # a file of the original torchvision network loads into the backbone, classifier ignored
    import torchvision

    tv = torchvision.models.mobilenet_v2()
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    other, _ = engine.build_model("mobilenet_v2", {**opts, "weights": str(tmp_path / "tv.pth")}, 3, seed=3)
    assert torch.equal(other.base[0][0].weight, tv.features[0][0].weight)


@pytest.mark.slow
@needs_torch
def test_torch_weights_file_that_does_not_fit_is_a_clear_error(tmp_path):
    import torch

    from benchbox_torch import engine

    torch.save({"unrelated.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    b = backbone("torch/vgg19")
    with pytest.raises(WeightsError, match="does not fit the network"):
        engine.build_model("vgg19", {**b.defaults, "weights": str(tmp_path / "bad.pth"), "input_size": [32, 32]}, 3, 0)


@pytest.mark.slow
@needs_keras
@needs_shared_weights
def test_real_imagenet_weights_load_from_file_and_from_the_keras_cache(tmp_path, monkeypatch, no_network):
    from benchbox_keras import engine

    b = backbone("keras/mobilenet_v2")
    opts = {**b.defaults, "input_size": [96, 112], "alpha": 0.35}  # not square: Keras picks the 224 file
    from_file, base = engine.build_model("mobilenet_v2", {**opts, "weights": str(SHARED_H5)}, 3, seed=0)
    means = [np.abs(layer.moving_mean.numpy()).mean() for layer in base.layers if hasattr(layer, "moving_mean")]
    assert len(means) == 52 and np.mean(means) > 0.5  # ImageNet statistics, not the initial zeros

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    shutil.copy(SHARED_H5, tmp_path / "models" / KERAS_NAME)
    b.prepare({**opts, "weights": "imagenet"})  # found in the cache: no network needed
    _, cached_base = engine.build_model("mobilenet_v2", {**opts, "weights": "imagenet"}, 3, seed=0)
    assert np.array_equal(cached_base.get_layer("Conv1").kernel.numpy(), base.get_layer("Conv1").kernel.numpy())


@pytest.mark.slow
@needs_keras
def test_describe_command_shows_the_facts():
    res = run_cli("backbones", "describe", "keras/mobilenet_v2", "--input", "96x96")
    assert res.returncode == 0, res.stderr
    for fact in ("params_frozen", "3,360", "block_1_expand", "154 Keras layers", "gmacs"):
        assert fact in res.stdout, fact


@pytest.mark.slow
@needs_keras
def test_paper_suite_without_weights_or_data_stops_at_once_naming_both(offline_runs):
    results, tmp = offline_runs
    res = results["paper"]
    assert res.returncode == 1 and "Traceback" not in res.stderr
    for needle in (
        "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "inception_resnet_v2",
        'weights = "none"',
        "covid-chestxray-dataset",
        "chest_xray",
        "benchbox data fetch",
    ):
        assert needle in res.stderr, needle
    assert not (tmp / "run" / "folds").exists()
