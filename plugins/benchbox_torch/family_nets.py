"""The timm and TorchXRayVision networks as ``engine.NetSpec`` values: how to build each one, its
preprocessing, which modules ``freeze`` names, its weights and its prefix-cache key.

timm: ``create_model(model, num_classes=0, global_pool="")`` and ``forward_features`` when that gives
an (N, C, H, W) map (CNNs: benchbox's pooling and head follow); otherwise (ViT tokens, Swin's NHWC
maps) the model's own pooling gives (N, C) and benchbox's head follows. A model built for one input
size (ViT, Swin) is built for the suite's ``input_size`` (timm resamples its position embeddings).
Preprocessing: grayscale x3 (colour data sets, ``color = "rgb"``: the three channels as they are),
/255, the model's own ``pretrained_cfg`` mean and std per channel.

TorchXRayVision: its DenseNet-121s (``features``, then ReLU, as its ``features2``) and its ResNet-50
(up to ``layer4``) take one channel scaled to [-1024, 1024] (``xrv.datasets.normalize(img, 255)``:
(2 x / 255 - 1) * 1024, here mean 0.5 and std 1/2048 after /255), at 224x224 (512x512 for the
ResNet) by default. benchbox's loader pads to the aspect ratio where the library crops the centre.
These models are 1-channel: colour input is reduced to its luma (ITU-R 601, as the grayscale loader's
conversion) before the scaling, so a colour data set gives them what ``color = "gray"`` would.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys

import torch
from torch import nn

from benchbox.errors import BenchboxError, WeightsError
from benchbox.execute import memo
from benchbox_engine_common.freeze import frozen_count, module_names, parse_freeze
from benchbox_engine_common.networks import check_weights_file
from benchbox_torch import engine, gradcam
from benchbox_torch.family_options import freeze_value, weights_kind

WHAT_TO_DO = (
    'in the suite\'s [backbones.*] table set weights = "none" (random initialisation) or '
    'weights = "/path/to/weights.safetensors" (or a .pth state dict)'
)


# --- timm ---------------------------------------------------------------------------------
class TimmPooled(nn.Module):
    """A timm model whose features are not an (N, C, H, W) map: its own pooling, as a 1x1 map."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)[:, :, None, None]


def _timm_create(model: str, layout: tuple[dict, str], pretrained: bool):
    import timm

    extra, mode = layout
    kwargs = {**extra, "num_classes": 0, **({"global_pool": ""} if mode == "map" else {})}
    net = timm.create_model(model, pretrained=pretrained, **kwargs)
    return (engine.TimmFeatures(net) if mode == "map" else TimmPooled(net)), net


@functools.cache
def timm_layout(model: str, h: int, w: int) -> tuple[dict, str]:
    """(extra create_model arguments, "map" | "pooled") with which ``model`` takes an h x w input;
    tried on the meta device (shapes only, no memory), so `benchbox validate` can afford it, and kept in
    the user cache (benchbox/execute/memo.py): ~0.5 s per network, once per machine."""

    def decode(value):
        extra, mode = value
        if mode not in ("map", "pooled") or not isinstance(extra, dict):
            raise ValueError(value)
        return {k: tuple(v) if isinstance(v, list) else v for k, v in extra.items()}, mode

    return memo.remembered("timm-layout", [model, h, w], lambda: _try_timm_layouts(model, h, w), decode)


def _try_timm_layouts(model: str, h: int, w: int) -> tuple[dict, str]:
    errors: dict[tuple[bool, str], Exception] = {}
    for extra in ({}, {"img_size": (h, w)}):
        for mode in ("map", "pooled"):
            try:
                with torch.device("meta"):
                    base, net = _timm_create(model, (extra, mode), pretrained=False)
                    out = base.eval()(torch.zeros(1, 3, h, w))
            except Exception as exc:  # a fixed input size, an unknown argument, a pooling it lacks
                errors[bool(extra), mode] = exc
                continue
            if out.ndim == 4 and out.shape[1] == net.num_features:
                return extra, mode
    import timm

    cfg = timm.models.get_pretrained_cfg(model)
    why = errors.get((False, "pooled")) or next(iter(errors.values()), None)  # the model's own complaint
    native = f"; it was made for {cfg.input_size[1]}x{cfg.input_size[2]}" if cfg and cfg.input_size else ""
    raise BenchboxError(
        f"timm/{model}: cannot take input_size [{h}, {w}] ({type(why).__name__}: {str(why)[:200]}){native}. "
        "Set input_size in the suite's [backbones.*] table"
    )


def timm_weights_location(model: str) -> tuple[str, str]:
    """(where timm caches the pretrained file, where it downloads it from)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(model)
    if cfg is not None and not cfg.hf_hub_id and cfg.url:
        return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(cfg.url)), cfg.url
    from huggingface_hub import constants

    hub_id = (cfg.hf_hub_id if cfg is not None and cfg.hf_hub_id else f"timm/{model}").split("@")[0]
    return (
        os.path.join(constants.HF_HUB_CACHE, "models--" + hub_id.replace("/", "--")),
        f"https://huggingface.co/{hub_id}",
    )


# --- TorchXRayVision ------------------------------------------------------------------------
class TxvDenseFeatures(nn.Module):
    """A TorchXRayVision DenseNet's ``features`` followed by ReLU (its ``features2`` before pooling)."""

    def __init__(self, densenet):
        super().__init__()
        self.features = densenet.features

    def forward(self, x):
        return nn.functional.relu(self.features(x))


class TxvResNetFeatures(nn.Module):
    """A TorchXRayVision ResNet (a torchvision ResNet with a 1-channel stem) up to ``layer4``."""

    def __init__(self, resnet):
        super().__init__()
        resnet.fc, resnet.avgpool = nn.Identity(), nn.Identity()
        self.model = resnet

    def forward(self, x):
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        return m.layer4(m.layer3(m.layer2(m.layer1(x))))


def txv_models() -> list[str]:
    """TorchXRayVision's weights named ARCH-resSIZE-DATA (its short aliases such as "all" name the same files)."""
    import torchxrayvision as xrv

    return sorted(k for k in xrv.models.model_urls if "-res" in k and k.split("-")[0][:6] in ("densen", "resnet"))


def txv_resolution(model: str) -> int:
    import torchxrayvision as xrv

    return int(xrv.models.model_urls[model].get("input_resolution", 224))


def txv_weights_location(model: str) -> tuple[str, str]:
    import torchxrayvision as xrv

    url = xrv.models.model_urls[model]["weights_url"]
    return os.path.join(xrv.utils.get_cache_dir(), os.path.basename(url)), url


def _txv_base(model: str, pretrained: bool) -> nn.Module:
    import torchvision
    import torchxrayvision as xrv

    if pretrained:  # the library's own loader, on the file ensure_weights put in its cache
        with contextlib.redirect_stdout(sys.stderr):
            net = xrv.models.get_model(model)
        return TxvDenseFeatures(net) if model.startswith("densenet") else TxvResNetFeatures(net.model)
    if model.startswith("densenet"):
        return TxvDenseFeatures(xrv.models.DenseNet(**xrv.models.get_densenet_params(model.split("-")[0])))
    labels = len(xrv.models.model_urls[model]["labels"])
    resnet = getattr(torchvision.models, model.split("-")[0])(num_classes=labels, weights=None)
    resnet.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)  # as xrv.models.ResNet
    return TxvResNetFeatures(resnet)


# --- specs ------------------------------------------------------------------------------------
def spec(family: str, model: str, options) -> engine.NetSpec:
    """How to build ``family/model`` with these options."""
    name = f"{family}/{model}"
    freeze = parse_freeze(freeze_value(options["freeze"]))
    kind_of = functools.partial(weights_kind, family)
    h, w = (int(v) for v in options["input_size"])
    if family == "timm":
        layout = timm_layout(model, h, w)

        def make_base(pretrained):
            base, net = _timm_create(model, layout, pretrained)
            return base, tuple(net.pretrained_cfg["mean"]), tuple(net.pretrained_cfg["std"])

        strip, prefixes = "model.", ("model.",)
    else:

        def make_base(pretrained):
            return _txv_base(model, pretrained), (0.5,), (1 / 2048,)

        strip = "features." if model.startswith("densenet") else "model."
        prefixes = ("model.",)  # a torchvision ResNet's keys sit under model.; a DenseNet's match as they are

    def weights_identity():
        weights = options["weights"]
        return f"{weights}@{os.path.getmtime(os.path.expanduser(weights))}" if kind_of(weights) == "file" else weights

    return engine.family_spec(name, options, freeze, kind_of, make_base, weights_identity, strip, prefixes)


@functools.cache
def _unit_names(family: str, model: str, h: int, w: int) -> tuple[str, ...]:
    """The weight-carrying modules a freeze setting counts, from a meta-device build (kept in the user cache)."""

    def build() -> tuple[str, ...]:
        s = spec(family, model, {"freeze": "none", "weights": "none", "input_size": [h, w]})
        with torch.device("meta"):
            base, _, _ = s.make_base(False)
        return tuple(s.unit_names(engine.weight_units(base)))

    return memo.remembered("freeze-units", [family, model, h, w], build, lambda names: tuple(map(str, names)))


def check(family: str, model: str, options) -> None:
    """Raise BenchboxError when the network cannot take the input size or has no such freeze module."""
    h, w = (int(v) for v in options["input_size"])
    if family == "timm":
        timm_layout(model, h, w)
    frozen_count(parse_freeze(freeze_value(options["freeze"])), _unit_names(family, model, h, w), f"{family}/{model}")


def ensure_weights(family: str, model: str, options) -> None:
    """Fail before any data loads when the weights cannot be had; download them when they can."""
    name = f"{family}/{model}"
    kind = weights_kind(family, options["weights"])
    if family == "txv" and options["weights"].lower() == "imagenet":
        kind = "pretrained"  # `benchbox weights fetch` asks every backbone for "imagenet"; suites are refused it
    if kind == "none":
        return
    if kind == "file":
        check_weights_file(
            name, options["weights"], lambda: engine.build_model(spec(family, model, options), options, 2, 0)
        )
        return
    cached, url = (timm_weights_location if family == "timm" else txv_weights_location)(model)
    try:
        if family == "timm":
            import timm

            h, w = (int(v) for v in options["input_size"])
            extra, _ = timm_layout(model, h, w)
            timm.create_model(model, pretrained=True, num_classes=0, **extra)
        elif not os.path.isfile(cached):
            import torchxrayvision as xrv

            with contextlib.redirect_stdout(sys.stderr):  # it prints progress; stdout is benchbox's
                xrv.models.get_weights(model)
    except BenchboxError:
        raise
    except Exception as exc:
        library = "timm" if family == "timm" else "TorchXRayVision"
        place = (
            f"    {library} looks in: {cached}\n"
            if family == "timm"
            else f"    TorchXRayVision looks for the file at: {cached} (copy it there by hand to work offline)\n"
        )
        raise WeightsError(
            f"{name}: pretrained weights are not in the cache and could not be downloaded "
            f"({type(exc).__name__}: {str(exc)[:200]}).\n"
            f"{place}"
            f"    It downloads from: {url}\n"
            f"    To fix: on a machine with a network run `benchbox weights fetch {name}` and copy the cache "
            f"over; or, {WHAT_TO_DO}."
        ) from None


def describe(family: str, model: str, options) -> dict:
    """What `benchbox backbones describe` shows, freezing included."""
    s = spec(family, model, options)
    net, info = engine.build_model(s, {**options, "weights": "none"}, num_classes=3, seed=0)
    h, w = (int(v) for v in options["input_size"])
    names = list(_unit_names(family, model, h, w))
    choices = module_names(names, depth=2)
    if len(choices) > 40:
        choices = module_names(names, depth=1)
    mean = tuple(round(float(v), 3) for v in net.mean.flatten())
    std = tuple(round(float(v), 5) for v in net.std.flatten())
    if family == "timm":
        library, layout = "timm", timm_layout(model, h, w)
        preprocessing = f"grayscale x3 (RGB as is), /255, mean {mean}, std {std} (the model's pretrained_cfg)"
        pooling = options["pooling"] if layout[1] == "map" else f"the model's own ({net.base.model.global_pool!s})"
    else:
        library = "torchxrayvision"
        preprocessing = (
            "1 channel (colour reduced to its luma), scaled to [-1024, 1024] as TorchXRayVision's normalize(img, 255)"
        )
        pooling = options["pooling"]
    return {
        "framework": "torch",
        "model": f"{library} {model}",
        "depth": f"{info['units']} weight-carrying modules",
        "freeze": str(parse_freeze(freeze_value(options["freeze"]))),
        "last_frozen_layer": info["last_frozen_layer"],
        "frozen_modules": f"{info['frozen_units']} of {info['units']}",
        **engine.parameter_counts(net),
        "input_size": [h, w],
        "preprocessing": preprocessing,
        "gmacs": engine.count_gmacs(net, h, w),
        "head": list(options["head"]),
        "pooling": pooling,
        "weights": options["weights"],
        "freeze_names": ", ".join(choices),
        # what [explain] layer may name ("auto": the deepest map of 7x7 or more, benchbox_torch/gradcam.py)
        "explain_layers": ", ".join(gradcam.stage_maps(net, (h, w))) or "base (the last feature map)",
        "explain_auto": gradcam.auto_layer(net, (h, w))[0],
    }
