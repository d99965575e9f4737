"""The foundation encoders (``hf/<repo-or-dir>``, ``open_clip/<name>``) as ``engine.NetSpec`` values.

transformers: ``AutoModel`` (a CLIP/SigLIP-like model with both towers: its ``vision_model``); the
feature is ``pooler_output`` where the model gives one, else the CLS token (``last_hidden_state[:, 0]``),
else a CNN's last map. Preprocessing: the snapshot's image processor (``AutoImageProcessor``): its
mean and std after /255 (``do_rescale``), its size as the default input size (benchbox's loader resizes);
grayscale repeated to 3 channels. Position embeddings are interpolated for another input size where the
model takes ``interpolate_pos_encoding``.

open_clip: ``create_model(name, pretrained=tag)`` then ``.visual``; the feature is the visual tower's
output (the projected image embedding, as ``encode_image``); mean and std from the model's
preprocessing config; another input size via ``force_image_size``.

Both give ``engine`` a base returning an (N, D, 1, 1) map, so fine-tuning (head, ``freeze``), the linear
probe and kNN all go through the same engine as timm. A wholly frozen encoder is one fx leaf, so
``freeze = "all"`` caches its features across epochs as timm's frozen prefixes are.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import io
import logging
import os
import socket
from urllib.parse import urlparse

import torch
from torch import nn

from benchbox.errors import BenchboxError, WeightsError
from benchbox_engine_common.freeze import frozen_count, module_names, parse_freeze
from benchbox_torch import engine
from benchbox_torch.family_options import foundation_weights_kind, freeze_value, hf_local_dir, offline_hint

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class Encoder(nn.Module):
    """An image tower as a benchbox base: (N, 3, H, W) -> its feature vector as an (N, D, 1, 1) map.
    ``feature``: "pooler_output", "cls" (first token), "map" (a CNN's (N, C, H, W), averaged) or "output"."""

    def __init__(self, model: nn.Module, feature: str, kwargs: dict | None = None):
        super().__init__()
        self.model, self.feature, self.kwargs = model, feature, dict(kwargs or {})
        model.fx_leaf = True  # torch.fx keeps the tower as one module (engine._Tracer): frozen whole, it is cached

    def forward(self, x):
        if self.feature == "output":
            f = self.model(x)
        else:
            out = self.model(pixel_values=x, **self.kwargs)
            if self.feature == "pooler_output":
                f = out.pooler_output
            elif self.feature == "cls":
                f = out.last_hidden_state[:, 0]
            else:
                f = out.last_hidden_state.mean(dim=(2, 3))
        return f.reshape(f.shape[0], -1)[:, :, None, None]


@contextlib.contextmanager
def hub_or_cache():
    """Downloads where the hub answers; where it does not (no network), the Hugging Face cache only, at
    once, instead of the hub client's ~30 s of retries before the same failure."""
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    offline = constants.HF_HUB_OFFLINE
    if not offline:
        try:
            socket.create_connection((host, 443), timeout=5).close()
        except OSError:
            offline = True
    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


# --- transformers ---------------------------------------------------------------------------------
def _quiet():
    """transformers and open_clip log progress and warnings; benchbox's stdout is its own."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    for name in ("transformers", "open_clip", "root"):
        logger = logging.getLogger(None if name == "root" else name)
        level = logger.level
        logger.setLevel(logging.CRITICAL)  # a failure is raised as benchbox's own one-line error
        stack.callback(logger.setLevel, level)
    try:
        from transformers.utils import logging as tlog

        verbosity = tlog.get_verbosity()
        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
        stack.callback(tlog.set_verbosity, verbosity)
    except ImportError:
        pass
    return stack


def hf_source(model: str, options) -> str:
    """Where config, weights and processor come from: ``weights`` when it names a snapshot directory,
    else the model's name (a local directory or a hub id)."""
    weights = options.get("weights", "pretrained")
    if foundation_weights_kind("hf", weights) == "snapshot":
        return os.path.expanduser(weights)
    return hf_local_dir(model) or model


def _hf_kwargs() -> dict:
    """use_kernels=False where transformers has hub kernels (they would be downloaded)."""
    from transformers import PreTrainedModel

    return {"use_kernels": False} if "use_kernels" in inspect.getsource(PreTrainedModel.from_pretrained) else {}


def _hf_error(name: str, model: str, exc: Exception) -> WeightsError:
    return WeightsError(
        f"{name}: cannot load {model!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}); "
        + offline_hint("hf", model)
    )


def hf_config(name: str, model: str, options):
    from transformers import AutoConfig

    source = hf_source(model, options)
    try:
        with _quiet():
            return AutoConfig.from_pretrained(source, local_files_only=os.path.isdir(source))
    except Exception as exc:
        raise _hf_error(name, source, exc) from None


def hf_processor(source: str) -> dict:
    """What the snapshot's image processor applies: size, rescale, mean, std (ImageNet's where it has none)."""
    facts = {"processor": None, "size": None, "rescale": 1 / 255, "mean": IMAGENET[0], "std": IMAGENET[1]}
    try:
        from transformers import AutoImageProcessor

        with _quiet():
            p = AutoImageProcessor.from_pretrained(source, local_files_only=os.path.isdir(source))
    except Exception:
        return {**facts, "processor": "none found: ImageNet mean and std"}
    facts["processor"] = type(p).__name__
    if getattr(p, "do_normalize", True) and getattr(p, "image_mean", None) is not None:
        mean, std = list(p.image_mean), list(p.image_std)
        facts["mean"], facts["std"] = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    elif not getattr(p, "do_normalize", True):
        facts["mean"], facts["std"] = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if getattr(p, "do_rescale", True) is False:
        facts["rescale"] = 1.0
    elif getattr(p, "rescale_factor", None):
        facts["rescale"] = float(p.rescale_factor)
    crop = getattr(p, "crop_size", None) if getattr(p, "do_center_crop", False) else None
    facts["size"] = _size_of(crop) or _size_of(getattr(p, "size", None))
    return facts


def _size_of(size) -> list[int] | None:
    if size is None:
        return None
    get = size.get if isinstance(size, dict) else lambda k, d=None: getattr(size, k, d)
    if get("height", None) and get("width", None):
        return [int(get("height")), int(get("width"))]
    edge = get("shortest_edge", None)
    return [int(edge), int(edge)] if edge else None


def _image_tower(full: nn.Module, name: str) -> nn.Module:
    if getattr(full, "main_input_name", None) == "pixel_values":
        return full
    vision = getattr(full, "vision_model", None)
    if isinstance(vision, nn.Module) and getattr(vision, "main_input_name", "pixel_values") == "pixel_values":
        return vision
    raise BenchboxError(
        f"{name}: {type(full).__name__} has no image tower (its input is {getattr(full, 'main_input_name', '?')!r}, "
        "not pixel_values); name an image model (ViT, DINOv2, CLIP/SigLIP, ConvNeXt...)"
    )


def _hf_build(name: str, model: str, options, pretrained: bool) -> nn.Module:
    from transformers import AutoModel

    source = hf_source(model, options)
    with _quiet():
        if pretrained:
            try:
                full = AutoModel.from_pretrained(source, local_files_only=os.path.isdir(source), **_hf_kwargs())
            except Exception as exc:
                raise _hf_error(name, source, exc) from None
        else:
            full = AutoModel.from_config(hf_config(name, model, options))
    return _image_tower(full, name)


@functools.cache
def _hf_layout(name: str, model: str, weights: str, h: int, w: int) -> tuple[str, bool]:
    """(feature, pass interpolate_pos_encoding), from a meta-device build and forward (shapes only)."""
    options = {"weights": weights}
    with torch.device("meta"):
        tower = _hf_build(name, model, options, pretrained=False)
        interp = "interpolate_pos_encoding" in inspect.signature(tower.forward).parameters
        try:
            out = tower(pixel_values=torch.zeros(1, 3, h, w), **({"interpolate_pos_encoding": True} if interp else {}))
        except Exception as exc:
            raise BenchboxError(
                f"{name}: cannot take input_size [{h}, {w}] ({type(exc).__name__}: {str(exc)[:200]}). "
                "Set input_size in the suite's [backbones.*] table"
            ) from None
    if getattr(out, "pooler_output", None) is not None:
        return "pooler_output", interp
    hidden = out.last_hidden_state
    return ("cls" if hidden.ndim == 3 else "map"), interp


FEATURE_WORDS = {
    "pooler_output": "the model's pooled output (pooler_output)",
    "cls": "the CLS token (last_hidden_state[:, 0]; the model has no pooler_output)",
    "map": "the last feature map, averaged (the model has no pooler_output)",
    "output": "the visual tower's output (the projected image embedding, as encode_image)",
}


# --- open_clip ------------------------------------------------------------------------------------
def open_clip_create(name: str, model: str, options, pretrained: bool, meta: bool = False) -> nn.Module:
    import open_clip

    weights = options["weights"]
    kind = foundation_weights_kind("open_clip", weights)
    h, w = (int(v) for v in options["input_size"])
    native = open_clip_native_size(model)
    extra = {} if native == [h, w] else {"force_image_size": h if h == w else (h, w)}
    hub = model.startswith("hf-hub:")  # its config and weights come from the hub together
    tag = weights if pretrained and kind == "tag" and not hub else None
    if hub:
        extra["load_weights"] = pretrained
    if meta:  # shapes only (validate): create_model would move the meta tensors to the CPU
        extra["device"] = "meta"
    try:
        with _quiet():
            full = open_clip.create_model(model, pretrained=tag, **extra)
    except Exception as exc:
        if tag or model.startswith("hf-hub:"):
            raise WeightsError(
                f"{name}: cannot load pretrained {tag or model!r} ({type(exc).__name__}: {str(exc)[:160]}); "
                + offline_hint("open_clip", model)
            ) from None
        raise BenchboxError(f"{name}: open_clip cannot build it ({type(exc).__name__}: {str(exc)[:200]})") from None
    return full.visual


def open_clip_native_size(model: str) -> list[int]:
    import open_clip

    cfg = open_clip.get_model_config(model) or {}
    size = (cfg.get("vision_cfg") or {}).get("image_size", 224)
    return [int(size), int(size)] if isinstance(size, int) else [int(v) for v in size]


def open_clip_mean_std(visual: nn.Module) -> tuple[tuple, tuple]:
    cfg = getattr(visual, "preprocess_cfg", None) or {}
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    mean = cfg.get("mean") or getattr(visual, "image_mean", None) or OPENAI_DATASET_MEAN
    std = cfg.get("std") or getattr(visual, "image_std", None) or OPENAI_DATASET_STD
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


# --- specs ----------------------------------------------------------------------------------------
def spec(family: str, model: str, options) -> engine.NetSpec:
    name = f"{family}/{model}"
    freeze = parse_freeze(freeze_value(options["freeze"]))
    h, w = (int(v) for v in options["input_size"])
    kind_of = functools.partial(foundation_weights_kind, family)

    if family == "hf":

        def make_base(pretrained):
            feature, interp = _hf_layout(name, model, options["weights"], h, w)
            tower = _hf_build(name, model, options, pretrained)
            facts = hf_processor(hf_source(model, options))
            return Encoder(tower, feature, {"interpolate_pos_encoding": True} if interp else {}), *_scaled(facts)

    else:

        def make_base(pretrained):
            visual = open_clip_create(name, model, options, pretrained)
            return Encoder(visual, "output"), *open_clip_mean_std(visual)

    def weights_identity():
        from benchbox.execute.embeddings import weights_identity

        return weights_identity(options["weights"])

    return engine.family_spec(name, options, freeze, kind_of, make_base, weights_identity)


def _scaled(facts: dict) -> tuple[tuple, tuple]:
    """The processor's (x * rescale - mean) / std as the engine's (x / 255 - mean') / std'."""
    r = facts["rescale"] * 255  # 1 for the usual rescale of 1/255
    return tuple(m / r for m in facts["mean"]), tuple(s / r for s in facts["std"])


def feature_kind(family: str, model: str, options) -> str:
    if family == "open_clip":
        return "output"
    h, w = (int(v) for v in options["input_size"])
    return _hf_layout(f"{family}/{model}", model, options["weights"], h, w)[0]


@functools.cache
def _unit_names(family: str, model: str, weights: str, h: int, w: int) -> tuple[str, ...]:
    s = spec(family, model, {"freeze": "none", "weights": weights, "input_size": [h, w]})
    with torch.device("meta"):
        if family == "hf":
            base = Encoder(_hf_build(s.name, model, {"weights": weights}, False), "cls")
        else:
            visual = open_clip_create(s.name, model, {"weights": "none", "input_size": [h, w]}, False, meta=True)
            base = Encoder(visual, "output")
    return tuple(s.unit_names(engine.weight_units(base)))


def config_available(family: str, model: str, options) -> bool:
    """Whether the structure can be known without a network (validate checks it only then)."""
    if family == "open_clip":
        return not model.startswith("hf-hub:")
    source = hf_source(model, options)
    if os.path.isdir(source):
        return True
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(source, "config.json"), str)
    except Exception:
        return False


def check(family: str, model: str, options) -> None:
    """Raise BenchboxError for a model without an image tower, an input size it cannot take, a freeze
    module it lacks (what `benchbox validate` can know offline)."""
    h, w = (int(v) for v in options["input_size"])
    weights = options["weights"]
    if family == "hf":
        _hf_layout(f"hf/{model}", model, weights, h, w)
    frozen_count(
        parse_freeze(freeze_value(options["freeze"])), _unit_names(family, model, weights, h, w), f"{family}/{model}"
    )


def ensure_weights(family: str, model: str, options) -> None:
    """Fail before any data loads when the weights cannot be had; download them when they can."""
    name = f"{family}/{model}"
    kind = foundation_weights_kind(family, options["weights"])
    if family == "hf":
        if kind == "none":
            hf_config(name, model, options)
            return
        source = hf_source(model, options)
        if os.path.isdir(source):
            return
        from transformers import AutoImageProcessor, AutoModel

        try:
            with _quiet(), hub_or_cache():
                AutoModel.from_pretrained(source, **_hf_kwargs())
                with contextlib.suppress(Exception):
                    AutoImageProcessor.from_pretrained(source)
        except Exception as exc:
            raise _hf_error(name, source, exc) from None
        return
    if kind == "file":
        from benchbox_engine_common.networks import check_weights_file

        check_weights_file(
            name, options["weights"], lambda: engine.build_model(spec(family, model, options), options, 2, 0)
        )
        return
    if kind == "tag" or model.startswith("hf-hub:"):
        with hub_or_cache():
            open_clip_create(name, model, options, pretrained=True)


def preprocessing(family: str, model: str, options) -> dict:
    """What is applied to an image before the encoder (the fold record's info, embed identity, describe)."""
    if family == "hf":
        facts = hf_processor(hf_source(model, options))
        rescale = "/255" if abs(facts["rescale"] - 1 / 255) < 1e-9 else f"x {facts['rescale']}"
        return {
            "processor": facts["processor"],
            "processor_size": facts["size"],
            "applied": f"grayscale x3 (RGB as is), {rescale}, mean {_r(facts['mean'])}, std {_r(facts['std'])} "
            "(the image processor's); resized to input_size by benchbox's loader",
        }
    import open_clip

    cfg = (open_clip.get_model_config(model) or {}).get("vision_cfg", {})
    mean = cfg.get("image_mean") or open_clip.constants.OPENAI_DATASET_MEAN
    std = cfg.get("image_std") or open_clip.constants.OPENAI_DATASET_STD
    return {
        "processor": "open_clip model config",
        "processor_size": open_clip_native_size(model),
        "applied": f"grayscale x3 (RGB as is), /255, mean {_r(mean)}, std {_r(std)} (the model config's); "
        "resized to input_size by benchbox's loader",
    }


def _r(values) -> tuple:
    return tuple(round(float(v), 5) for v in values)


def describe(family: str, model: str, options) -> dict:
    s = spec(family, model, options)
    net, info = engine.build_model(
        s, {**options, "weights": _random(family, options["weights"])}, num_classes=3, seed=0
    )
    h, w = (int(v) for v in options["input_size"])
    names = list(_unit_names(family, model, options["weights"], h, w))
    choices = module_names(names, depth=2)
    if len(choices) > 40:
        choices = module_names(names, depth=1)
    pre = preprocessing(family, model, options)
    return {
        "framework": "torch",
        "model": f"{'transformers' if family == 'hf' else 'open_clip'} {model}",
        "feature": FEATURE_WORDS[feature_kind(family, model, options)],
        "depth": f"{info['units']} weight-carrying modules",
        "freeze": str(parse_freeze(freeze_value(options["freeze"]))),
        "last_frozen_layer": info["last_frozen_layer"],
        "frozen_modules": f"{info['frozen_units']} of {info['units']}",
        **engine.parameter_counts(net),
        "input_size": [h, w],
        "preprocessing": pre["applied"],
        "processor": f"{pre['processor']} (its size: {pre['processor_size']})",
        "gmacs": engine.count_gmacs(net, h, w),
        "head": list(options["head"]),
        "weights": options["weights"],
        "freeze_names": ", ".join(choices),
    }


def _random(family: str, weights: str) -> str:
    """Weights for a describe build: random, but an hf snapshot directory still names the config."""
    return weights if family == "hf" and foundation_weights_kind("hf", weights) == "snapshot" else "none"
