"""Keras backbones under the frozen schemes (linear-probe, knn): ``embed`` is the pooled output of the
frozen base network at the entry's input size and preprocessing (plugins/benchbox_keras/embed.py)."""

from __future__ import annotations

import numpy as np
import pytest

from benchbox.execute.store import RunStore
from conftest import WEIGHTS, needs_keras, run_cli, write_suite

pytestmark = needs_keras

SHARED_H5 = WEIGHTS / "mobilenet_v2_0.35_224_no_top_imagenet.h5"
needs_shared_weights = pytest.mark.skipif(not SHARED_H5.exists(), reason=f"{SHARED_H5} not present")


@pytest.mark.slow  # TensorFlow's import and a MobileNet v2 build: ~30 s on a busy 2-core machine
@needs_shared_weights
def test_features_are_the_imagenet_base_networks_pooled_output():
    """keras/mobilenet_v2 with the real ImageNet weights (alpha 0.35): the features are what
    keras.applications.MobileNetV2(weights=the file, pooling="avg") gives for the gray images repeated to
    RGB and scaled to [-1, 1], at the entry's input size; the cache key names weights by content hash."""
    import keras

    from benchbox.execute.schemes import can_embed, embed_identity
    from benchbox.plugins import load_registry

    backbone = load_registry().backbones["keras/mobilenet_v2"].obj
    assert can_embed(backbone)
    options = {**backbone.defaults, "weights": str(SHARED_H5), "alpha": 0.35, "input_size": [96, 96]}
    images = np.random.default_rng(0).integers(0, 256, (5, 96, 96), dtype=np.uint8)
    features = backbone.embed(images, options)
    base = keras.applications.MobileNetV2(
        alpha=0.35, include_top=False, weights=str(SHARED_H5), input_shape=(96, 96, 3), pooling="avg"
    )
    expected = base.predict(np.repeat(images[..., None].astype("float32"), 3, axis=-1) / 127.5 - 1, verbose=0)
    assert features.shape == (5, 1280) and features.dtype == np.float32
    assert np.abs(features - expected).max() < 1e-4 and np.abs(expected).max() > 0.1
    identity = embed_identity(backbone, options)
    assert identity["alpha"] == 0.35 and identity["input_size"] == [96, 96] and "head" not in identity
    from benchbox.execute.embeddings import encoder_key

    assert encoder_key("keras/mobilenet_v2", identity)[1]["weights"].startswith("sha256:")


SUITE = """
name = "{name}"
seed = 5
output_dir = "{out}"
evaluators = ["paper"]
[protocol]
k = 3
grouped = true
[training]
batch_size = 8
[datasets.syn]
plugin = "synthetic"
images = 30
patients = 12
{backbones}
"""


def keras_entries(weights: str, schemes=("linear-probe", "knn")) -> str:
    out = ""
    for scheme in schemes:
        out += (
            f'[backbones.k-{scheme}]\nplugin = "keras/mobilenet_v2"\nweights = "{weights}"\nalpha = 0.35\n'
            f'input_size = [64, 64]\nscheme = "{scheme}"\n' + ("k = 5\n" if scheme == "knn" else "")
        )
    return out


@pytest.mark.slow  # two CLI runs of a Keras MobileNet v2 (TensorFlow's start-up each time)
@needs_shared_weights
def test_cli_keras_probe_and_knn_then_a_rerun_hits_the_cache(tmp_path):
    """Through the CLI, with the real ImageNet weights: a linear probe and a kNN of keras/mobilenet_v2 run on
    the synthetic set; a second suite over the same images and encoder reads every feature and the encoder's
    inference time from the cache (no image goes through the network)."""
    env = {"BENCHBOX_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    first = write_suite(
        tmp_path / "a.toml", SUITE.format(name="a", out=tmp_path / "runs", backbones=keras_entries(SHARED_H5))
    )
    out = run_cli("run", first, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "linear-probe" in out.stdout and "knn" in out.stdout
    info = run_cli("cache", "info", env=env)
    assert info.returncode == 0 and "keras/mobilenet_v2" in info.stdout and "30" in info.stdout, info.stdout
    runs = sorted((tmp_path / "runs").iterdir())
    records = RunStore(runs[-1]).read_records()[0]
    assert {r.info["scheme"] for r in records} == {"linear-probe", "knn"}
    computed = sum(r.info["embedding_cache"]["computed"] + r.info["embedding_cache_test"]["computed"] for r in records)
    assert computed == 30  # each image once, over both entries and all folds
    assert all(r.info["feature_dim"] == 1280 for r in records)

    second = write_suite(
        tmp_path / "b.toml",
        SUITE.format(name="b", out=tmp_path / "runs2", backbones=keras_entries(SHARED_H5, ("knn",))),
    )
    again = run_cli("run", second, cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    records = RunStore(next((tmp_path / "runs2").iterdir())).read_records()[0]
    assert len(records) == 3
    assert all(r.info["embedding_cache"]["computed"] == 0 for r in records)
    assert all(r.info["embedding_cache_test"]["computed"] == 0 for r in records)
    assert all(r.info["timing"]["encoder_timing"].startswith("kept from") for r in records)
