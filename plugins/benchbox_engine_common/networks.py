"""What the Keras and PyTorch backbone plugins share: the study's settings per network (Table 1
of Apostolopoulos & Mpesiana 2020, used as plugin defaults) and the validation of backbone
options. Framework-free; the plugins add the framework code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from benchbox.contracts import Backbone
from benchbox.errors import BenchboxError, WeightsError

#: network -> the study's layer cutoff (Keras layers frozen from the input) and hidden dense head
STUDY = {
    "vgg19": {"cutoff": 18, "head": [1024]},
    "mobilenet_v2": {"cutoff": 10, "head": [1000, 750]},
    "inception_v3": {"cutoff": 249, "head": [1000]},
    "xception": {"cutoff": 120, "head": [1000, 750]},
    "inception_resnet_v2": {"cutoff": 730, "head": []},
}

#: the smallest side each network takes (keras.applications' own minimum; torchvision/timm's are alike)
MIN_INPUT_SIZE = {"vgg19": 32, "mobilenet_v2": 32, "inception_v3": 75, "xception": 71, "inception_resnet_v2": 75}

#: what the paper leaves open, set to the Keras defaults (documented in docs/backbones.md)
COMMON_DEFAULTS = {
    "dropout": 0.5,
    "pooling": "avg",
    "weights": "imagenet",
    "input_size": [200, 266],
    "cache_prefix": True,
}
#: BatchNorm momentum in PyTorch's meaning, the weight of the new batch statistic in the running
#: average (PyTorch's default). Both engines use it: Keras's momentum is the weight of the old value,
#: so the Keras engine sets 1 - BN_MOMENTUM = 0.9 instead of Keras's default 0.99 (docs/backbones.md)
BN_MOMENTUM = 0.1
POOLINGS = ("avg", "max")
#: MobileNet v2 width multipliers keras.applications builds and has ImageNet weights for
KERAS_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)


@cache
def keras_layers(network: str) -> list:
    """The Keras layer list [name, class, has_weights] of a network (tools/gen_keras_layer_table.py)."""
    table = json.loads((Path(__file__).parent / "keras_layers.json").read_text())
    return table["networks"][network]


def study_defaults(network: str) -> dict:
    defaults = {**STUDY[network], **COMMON_DEFAULTS}
    defaults["head"] = list(defaults["head"])
    if network == "mobilenet_v2":
        defaults["alpha"] = 1.0
    return defaults


def weights_kind(weights: str) -> str:
    """'imagenet', 'none' or 'file'."""
    if weights.lower() in ("imagenet", "none"):
        return weights.lower()
    return "file"


def head_problems(options: Mapping[str, Any]) -> list[str]:
    """What is wrong with head, dropout and pooling (every backbone with a dense head has them)."""
    problems = []
    head = options.get("head")
    if not isinstance(head, list) or not all(isinstance(u, int) and not isinstance(u, bool) and u > 0 for u in head):
        problems.append(f"head: must be a list of positive integers (hidden dense sizes, [] for none), got {head!r}")
    dropout = options.get("dropout")
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
        problems.append(f"dropout: must be a number in [0, 1), got {dropout!r}")
    if options.get("pooling") not in POOLINGS:
        problems.append(f"pooling: must be one of {', '.join(POOLINGS)}, got {options.get('pooling')!r}")
    return problems


class NetworkBackbone(Backbone):
    """A study network in one framework; subclasses implement building and training."""

    network: str = ""

    def __init__(self):
        self.defaults = study_defaults(self.network)
        self.name = f"{self.framework}/{self.network}"
        self.min_input_size = MIN_INPUT_SIZE[self.network]

    def check_options(self, options: Mapping[str, Any]) -> list[str]:
        problems = []
        cutoff = options.get("cutoff")
        if not isinstance(cutoff, int) or isinstance(cutoff, bool) or cutoff < 0:
            problems.append(f"cutoff: must be an integer >= 0, got {cutoff!r}")
        problems += head_problems(options)
        weights = options.get("weights")
        if (
            isinstance(weights, str)
            and weights_kind(weights) == "file"
            and not os.path.exists(os.path.expanduser(weights))
        ):
            problems.append(f"weights: {weights!r} is neither 'imagenet', 'none' nor an existing file")
        alpha = options.get("alpha")
        if "alpha" in options and (not isinstance(alpha, (int, float)) or alpha <= 0):
            problems.append(f"alpha: must be a positive width multiplier, got {alpha!r}")
        return problems


def check_weights_file(name: str, path: str, build: Callable[[], object], hint: str = "") -> None:
    """A weights file exists and loads into the network ``build()`` makes with it: checked in
    ``prepare``, before any data is loaded. ``name`` is the backbone (e.g. "torch/vgg19")."""
    if not os.path.isfile(os.path.expanduser(path)):
        raise WeightsError(f"{name}: weights file {path} not found")
    try:
        build()
    except BenchboxError:
        raise
    except Exception as exc:
        raise WeightsError(
            f"{name}: weights file {path} cannot be loaded into this network "
            f"({type(exc).__name__}: {str(exc)[:300]}){hint}"
        ) from None
