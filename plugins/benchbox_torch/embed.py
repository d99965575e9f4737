"""Frozen features for the linear-probe and kNN schemes (``Backbone.embed``; benchbox/execute/schemes.py).

The encoder is the backbone as fine-tuning builds it (``engine.build_model``: the same weights, the same
input scaling and normalisation, the same base network) without training: the pooled feature vector is
the output of the head's first layers (``pooling``: global average or max over the last feature map),
i.e. exactly what the fine-tuned head would read. Random weights (``weights = "none"``) are drawn with
seed 0, so the features of an image are the same in every fold, run and suite (the embedding cache
relies on it). Batched on ``training.device`` (a GPU where there is one), in eval mode, without gradients.

``EMBEDDED_IMAGES`` counts the images that went through an encoder in this process (the tests count
forward passes with it).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from benchbox.contracts import TrainingConfig
from benchbox_engine_common.fold_engine import options_fingerprint
from benchbox_torch import engine

#: images embedded in this process (every encoder forward pass, for tests and benchmarks)
EMBEDDED_IMAGES = 0
#: seed of a randomly initialised encoder: the same network in every fold, run and suite
EMBED_SEED = 0
_ENCODERS: OrderedDict[tuple, tuple] = OrderedDict()
_KEEP = 2


def encoder(spec: engine.NetSpec, options, rt: engine.Runtime):
    """(the frozen network on its device, its pooling layers); built once per process and options."""
    text, stamp = options_fingerprint(options, spec.weights_kind)  # the fold engine's model key, less the fold
    key = (spec.name, text, stamp, str(rt.device), rt.channels_last)
    if key not in _ENCODERS:
        net, _ = engine.build_model(spec, options, num_classes=2, seed=EMBED_SEED)
        net = rt.prepare_net(net).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        pool = net.head[:2]  # (Adaptive avg|max pool, Flatten): what the fine-tuned head reads
        _ENCODERS[key] = (net, pool)
        while len(_ENCODERS) > _KEEP:
            _ENCODERS.popitem(last=False)
    _ENCODERS.move_to_end(key)
    return _ENCODERS[key]


@torch.no_grad()
def embed(spec: engine.NetSpec, options, images: np.ndarray, training: TrainingConfig | None = None) -> np.ndarray:
    """(N, D) float32 pooled features of uint8 images (N, H, W) or (N, H, W, 3)."""
    global EMBEDDED_IMAGES
    training = training or TrainingConfig()
    rt = engine.runtime(training, spec.name)
    net, pool = encoder(spec, options, rt)
    xs = engine.images_tensor(np.asarray(images))
    out = []
    step = max(1, int(training.batch_size))
    for i in range(0, len(xs), step):
        with rt.autocast():
            feats = pool(net.features(rt.put(xs[i : i + step])))
        out.append(feats.float().cpu())
        EMBEDDED_IMAGES += len(feats)
    if not out:
        return np.zeros((0, engine._num_features(net)), dtype=np.float32)
    return torch.cat(out).numpy().astype(np.float32, copy=False)


def identity(name: str, options) -> dict:
    """What decides the features: the network, its weights, pooling, input size and the libraries'
    versions (the preprocessing is the engine's: uint8 / 255, then the weights' mean and std)."""
    import timm
    import torchvision

    return {
        "network": name,
        "weights": options.get("weights"),
        "pooling": options.get("pooling"),
        "input_size": list(options.get("input_size") or []),
        **({"alpha": options["alpha"]} if "alpha" in options else {}),
        "preprocessing": "uint8/255, (x - mean) / std of the weights (benchbox_torch.engine.BenchboxNet)",
        "random_init_seed": EMBED_SEED if str(options.get("weights")).lower() == "none" else None,
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__, "timm": timm.__version__},
    }
