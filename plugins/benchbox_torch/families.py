"""Backbone families of the PyTorch engine: every model timm lists, as ``timm/<model>``, and the
chest-X-ray networks TorchXRayVision ships, as ``txv/<weights>`` (e.g. ``txv/densenet121-res224-all``).

Options (plugin defaults, merged with the suite's as for the study's backbones):
- ``freeze``: "none" (default: fine-tune everything), "all" (train the head only), a fraction of the
  weight-carrying modules (counted from the input), or the name of the last frozen module
  ("layer3", "stages.2", "denseblock2"); frozen BatchNorm keeps its statistics.
- ``weights``: timm: "imagenet" (timm's pretrained weights, downloaded from the Hugging Face hub);
  txv: "pretrained" (its chest-X-ray weights, downloaded from GitHub); both: "none" (random) or a
  local .safetensors / state-dict file (loaded without executing code).
- ``head``, ``dropout``, ``pooling``, ``input_size``, ``cache_prefix``: as for the study's backbones.

Importing this module does not import PyTorch; ``family_nets`` does, when a network is needed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from benchbox.contracts import Availability, BackboneFamily
from benchbox.errors import BenchboxError
from benchbox_engine_common.freeze import freeze_problem
from benchbox_engine_common.networks import head_problems
from benchbox_torch.backbone import EngineBackbone
from benchbox_torch.family_options import freeze_value, weights_kind

TIMM_INSTALL = "pip install 'benchbox[torch]'  (torch, torchvision, timm)"
TXV_INSTALL = "pip install 'benchbox[torch,txv]'  (torchxrayvision, with torch and torchvision)"

#: what every family member starts from (input_size and weights are per family and model)
FAMILY_DEFAULTS = {"freeze": "none", "head": [], "dropout": 0.5, "pooling": "avg", "cache_prefix": True}


class FamilyBackbone(EngineBackbone):
    """One member of a family, e.g. timm/resnet18; the PyTorch work is in ``family_nets``."""

    framework = "torch"
    option_types = {"freeze": (str, float)}  # "none", "all", a layer name, or a fraction such as 0.5

    def __init__(self, family: str, model: str, defaults: dict, description: str):
        self.family, self.model = family, model
        self.name = f"{family}/{model}"
        self.defaults = {**FAMILY_DEFAULTS, **defaults}
        self.description = description

    def availability(self):
        return torch_family_availability(self.family)

    def check_options(self, options: Mapping[str, Any]) -> list[str]:
        problems = self.head_problems(options)
        weights = options.get("weights")
        word = "imagenet" if self.family == "timm" else "pretrained"
        if not isinstance(weights, str):
            problems.append(f'weights: must be "{word}", "none" or a file path, got {weights!r}')
        elif self.family == "txv" and weights.lower() == "imagenet":
            problems.append(
                'weights: TorchXRayVision networks are pretrained on chest X-rays, not ImageNet; use "pretrained", '
                '"none" or a file'
            )
        elif weights_kind(self.family, weights) == "file" and not os.path.exists(os.path.expanduser(weights)):
            problems.append(f"weights: {weights!r} is neither {word!r}, 'none' nor an existing file")
        freeze = freeze_value(options.get("freeze"))
        problem = freeze_problem(freeze)
        if problem:
            problems.append(problem)
        if problems or not input_size_ok(options) or not self.availability().ok:
            return problems
        # the network's structure, built on PyTorch's meta device (no memory, no weights): a freeze
        # module that does not exist and an input size the network cannot take are found here, in validate
        from benchbox_torch import family_nets

        try:
            family_nets.check(self.family, self.model, options)
        except BenchboxError as exc:  # the suite and the CLI name the backbone themselves
            problems.append(str(exc).removeprefix(f"{self.name}: "))
        return problems

    head_problems = staticmethod(head_problems)  # head, dropout, pooling: as the study's backbones check them

    def spec(self, options):
        from benchbox_torch import family_nets

        return family_nets.spec(self.family, self.model, options)

    def prepare(self, options):
        from benchbox_torch import family_nets

        family_nets.ensure_weights(self.family, self.model, options)

    def embed_identity(self, options):
        from benchbox_torch import embed

        return embed.identity(self.name, options)

    def bench_steps(self, options, batch_size, device, amp, channels_last, train):
        from benchbox_torch import engine

        return engine.bench_steps(self.spec(options), options, batch_size, device, amp, channels_last, train)

    def describe(self, options, input_size):
        from benchbox_torch import family_nets

        return family_nets.describe(self.family, self.model, {**options, "input_size": list(input_size)})


def input_size_ok(options: Mapping[str, Any]) -> bool:
    size = options.get("input_size")
    return isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)


def torch_family_availability(family: str) -> Availability:
    if family == "timm":
        return Availability.needs_modules("torch", "torchvision", "timm", install=TIMM_INSTALL)
    return Availability.needs_modules("torch", "torchvision", "torchxrayvision", install=TXV_INSTALL)


class TimmFamily(BackboneFamily):
    prefix = "timm"
    framework = "torch"
    description = "every model timm lists (timm.list_models()), ImageNet weights from the Hugging Face hub"

    def availability(self):
        return torch_family_availability("timm")

    def models(self) -> list[str]:
        import timm

        return list(timm.list_models())

    def backbone(self, model: str):
        import timm

        if not timm.is_model(model):  # also takes a pretrained tag: resnet18.a1_in1k
            return None
        cfg = timm.models.get_pretrained_cfg(model)
        size = list(cfg.input_size[1:]) if cfg is not None and cfg.input_size else [224, 224]
        return FamilyBackbone(
            "timm", model, {"weights": "imagenet", "input_size": size}, f"timm {model}, freeze by module name"
        )


class TxvFamily(BackboneFamily):
    prefix = "txv"
    framework = "torch"
    description = "TorchXRayVision's chest-X-ray-pretrained DenseNet-121s and ResNet-50 (weights from GitHub)"

    def availability(self):
        return torch_family_availability("txv")

    def models(self) -> list[str]:
        from benchbox_torch import family_nets

        return family_nets.txv_models()

    def backbone(self, model: str):
        from benchbox_torch import family_nets

        if model not in family_nets.txv_models():
            return None
        size = family_nets.txv_resolution(model)
        return FamilyBackbone(
            "txv",
            model,
            {"weights": "pretrained", "input_size": [size, size]},
            f"TorchXRayVision {model}: 1 channel scaled to [-1024, 1024], as the library trains them",
        )
