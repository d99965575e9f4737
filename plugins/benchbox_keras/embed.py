"""Frozen features of a Keras backbone for the linear-probe and kNN schemes (``Backbone.embed``;
benchbox/execute/schemes.py).

The encoder is the model fine-tuning builds (``engine.build_model``: the same input layout, gray x3 or
RGB, the network's own ImageNet preprocessing, the same weights, the base network at the entry's input
size) cut at its ``pooling`` layer (global average or max, the ``pooling`` option): the vector the
fine-tuned head would read, without training and in inference mode (BatchNormalization's moving
statistics, no dropout). Random weights (``weights = "none"``) are drawn with seed 0, so an image's
features are the same in every fold, run and suite (the embedding cache relies on it). Batched with the
fold's ``training.batch_size`` on ``training.device`` under its precision (Runtime, as training).

``EMBEDDED_IMAGES`` counts the images that went through an encoder in this process (tests count forward
passes with it).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from benchbox.contracts import TrainingConfig
from benchbox_engine_common.fold_engine import options_fingerprint
from benchbox_engine_common.networks import weights_kind

#: images embedded in this process (every encoder forward pass, for tests and benchmarks)
EMBEDDED_IMAGES = 0
#: seed of a randomly initialised encoder: the same network in every fold, run and suite
EMBED_SEED = 0
_ENCODERS: OrderedDict[tuple, object] = OrderedDict()
_KEEP = 2


def encoder(network: str, options, channels: int, rt):
    """The frozen network from the input to its pooled features, built once per process and options."""
    from benchbox_keras import engine

    text, stamp = options_fingerprint(identity(network, options), weights_kind)  # not the scheme's or head's keys
    key = (network, text, stamp, channels, rt)
    if key not in _ENCODERS:
        keras = engine.import_keras()
        while len(_ENCODERS) >= _KEEP:  # drop the oldest before building: two never share memory needlessly
            _ENCODERS.popitem(last=False)
        with rt.scope(), rt.building():
            model, _ = engine.build_model(network, options, num_classes=2, seed=EMBED_SEED, channels=channels)
            model.trainable = False
            _ENCODERS[key] = keras.Model(model.input, model.get_layer("pooling").output, name=f"{model.name}_encoder")
    _ENCODERS.move_to_end(key)
    return _ENCODERS[key]


def embed(network: str, options, images: np.ndarray, training: TrainingConfig | None = None) -> np.ndarray:
    """(N, D) float32 pooled features of uint8 images (N, H, W) or (N, H, W, 3)."""
    global EMBEDDED_IMAGES
    from benchbox_keras import backends, engine

    backends.select_backend(options, f"keras/{network}")
    keras = engine.import_keras()
    training = training or TrainingConfig()
    rt = engine.runtime(keras, training, f"keras/{network}")
    images = np.asarray(images)
    channels = 3 if images.ndim == 4 else 1
    net = encoder(network, options, channels, rt)
    if not len(images):
        return np.zeros((0, int(net.output.shape[-1])), dtype=np.float32)
    batch = max(1, int(training.batch_size))
    x = engine.as_input(images, channels)
    with rt.scope():
        out = net.predict(engine.whole_batches(x, batch), batch_size=batch, verbose=0)
    EMBEDDED_IMAGES += len(images)
    return np.asarray(keras.ops.convert_to_numpy(out), dtype=np.float32)[: len(images)]


def identity(network: str, options) -> dict:
    """What decides the features: the network, its weights, width, pooling, input size, the backend and
    the library versions (the preprocessing is the engine's, stated)."""
    from importlib.metadata import version

    from benchbox_keras import APPS, backends

    if network in APPS:
        preprocessing = "caffe: BGR mean subtraction" if APPS[network].preprocessing == "caffe" else "x/127.5 - 1"
    else:
        preprocessing = f"keras.applications preprocess_input of {network} (an affine Normalization layer)"
    return {
        "network": f"keras/{network}",
        "weights": options.get("weights"),
        "pooling": options.get("pooling"),
        "input_size": list(options.get("input_size") or []),
        **({"alpha": options["alpha"]} if "alpha" in options else {}),
        "preprocessing": f"gray x3 (RGB as is), {preprocessing} (benchbox_keras.engine)",
        "random_init_seed": EMBED_SEED if weights_kind(str(options.get("weights"))) == "none" else None,
        "backend": backends.wanted_backend(options),
        "versions": {"keras": version("keras")},
    }
