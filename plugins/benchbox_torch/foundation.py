"""Foundation encoders by name: ``hf/<repo-or-local-dir>`` (transformers: AutoModel + AutoImageProcessor)
and ``open_clip/<name>`` (open_clip's visual tower). Usable with every scheme (``embed``: linear probe,
kNN) and with fine-tuning (a head on the feature, ``freeze`` as the timm family has it).

Options, beside ``freeze``, ``head``, ``dropout``, ``input_size``, ``cache_prefix`` (as for timm/):
- hf: ``weights`` = "pretrained" (default: the snapshot the name gives: a local directory, loaded
  offline, or a hub id, downloaded once into the Hugging Face cache), "none" (random, from the config) or
  "/path/to/snapshot" (a directory with config.json + weights: a hub name's local copy, offline).
- open_clip: ``weights`` = an open_clip pretrained tag (default: the model's first, e.g. "openai"),
  "none" or a local checkpoint file. ``open_clip/hf-hub:org/repo`` (BiomedCLIP) needs the hub.
- ``input_size``: default the image processor's size (hf) or the model config's (open_clip).

Grayscale X-rays are repeated to 3 channels (these are RGB towers); the mean and std are the
processor's / model config's, recorded in describe, the fold record's info and the embedding identity.
Importing this module does not import PyTorch.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

from benchbox.contracts import Availability, Backbone, BackboneFamily
from benchbox.errors import BenchboxError
from benchbox_engine_common.freeze import freeze_problem
from benchbox_torch.families import FamilyBackbone, input_size_ok
from benchbox_torch.family_options import foundation_weights_kind, freeze_value, hf_local_dir

INSTALL = "pip install 'benchbox[torch,foundation]'  (transformers, open_clip_torch)"
LIBRARY = {"hf": "transformers", "open_clip": "open_clip"}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _processor_size(source: str) -> list[int] | None:
    """The default input size, from preprocessor_config.json (a local snapshot or the hub cache)."""
    path = os.path.join(source, "preprocessor_config.json")
    if not os.path.isfile(path):
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(source, "preprocessor_config.json")
        except Exception:
            return None
        if not isinstance(cached, str):
            return None
        path = cached
    try:
        cfg = json.loads(open(path).read())
    except (OSError, ValueError):
        return None
    for key in ("crop_size", "size") if cfg.get("do_center_crop") else ("size",):
        size = cfg.get(key)
        if isinstance(size, int):
            return [size, size]
        if isinstance(size, dict):
            if size.get("height") and size.get("width"):
                return [int(size["height"]), int(size["width"])]
            if size.get("shortest_edge"):
                return [int(size["shortest_edge"])] * 2
    return None


class FoundationBackbone(FamilyBackbone):
    """hf/<repo-or-dir> or open_clip/<name>; the PyTorch work is in ``foundation_nets``."""

    #: no Grad-CAM: a tower's features are vectors, not maps; the contract's default lets `benchbox validate`
    #: refuse [explain] for these backbones instead of a warning per fold after training
    explain = Backbone.explain

    def availability(self):
        return foundation_availability(self.family)

    def check_options(self, options: Mapping[str, Any]) -> list[str]:
        problems = self.head_problems(options)
        weights = options.get("weights")
        kind = foundation_weights_kind(self.family, weights) if isinstance(weights, str) else None
        if self.family == "hf":
            if kind is None or (kind == "snapshot" and not os.path.isdir(os.path.expanduser(weights))):
                problems.append(
                    f'weights: must be "pretrained", "none" or a local snapshot directory (config.json + weights), '
                    f"got {weights!r}"
                )
        elif kind is None or (kind == "file" and not os.path.isfile(os.path.expanduser(weights))):
            problems.append(
                f'weights: must be an open_clip pretrained tag, "none" or an existing checkpoint file, got {weights!r}'
            )
        elif kind == "tag" and not self.model.startswith("hf-hub:"):
            tags = open_clip_tags(self.model)
            if weights not in tags and weights.lower() != "pretrained":
                problems.append(
                    f"weights: {weights!r} is not an open_clip pretrained tag of {self.model} "
                    f"({', '.join(tags) or 'it has none'}), 'none' nor an existing checkpoint file"
                )
        problem = freeze_problem(freeze_value(options.get("freeze")))
        if problem:
            problems.append(problem)
        if problems or not input_size_ok(options) or not self.availability().ok:
            return problems
        from benchbox_torch import foundation_nets

        if not foundation_nets.config_available(self.family, self.model, options):
            return problems  # a hub name not yet downloaded: prepare downloads it or says how to work offline
        try:
            foundation_nets.check(self.family, self.model, options)
        except BenchboxError as exc:
            problems.append(str(exc).removeprefix(f"{self.name}: "))
        return problems

    def spec(self, options):
        from benchbox_torch import foundation_nets

        return foundation_nets.spec(self.family, self.model, options)

    def prepare(self, options):
        from benchbox_torch import foundation_nets

        foundation_nets.ensure_weights(self.family, self.model, options)

    def facts(self, options) -> dict:
        """The feature and the preprocessing applied: in the fold record's info and the embed identity."""
        from benchbox_torch import foundation_nets

        pre = foundation_nets.preprocessing(self.family, self.model, options)
        return {
            "feature": foundation_nets.feature_kind(self.family, self.model, options),
            "preprocessing_applied": pre["applied"],
            "processor": pre["processor"],
            "processor_size": pre["processor_size"],
        }

    def fit(self, job):
        model = super().fit(job)
        model.info.update(self.facts(job.options))
        return model

    def embed_identity(self, options):
        import importlib.metadata

        from benchbox_torch import embed, foundation_nets

        identity = embed.identity(self.name, options)
        if self.family == "hf" and foundation_weights_kind("hf", options.get("weights", "")) == "pretrained":
            identity["weights"] = foundation_nets.hf_source(self.model, options)  # a local dir: hashed by content
        versions = dict(identity.get("versions", {}))
        versions[LIBRARY[self.family]] = importlib.metadata.version(
            "transformers" if self.family == "hf" else "open_clip_torch"
        )
        return {**identity, **self.facts(options), "versions": versions}

    def describe(self, options, input_size):
        from benchbox_torch import foundation_nets

        return foundation_nets.describe(self.family, self.model, {**options, "input_size": list(input_size)})


def foundation_availability(family: str) -> Availability:
    return Availability.needs_modules("torch", "torchvision", "timm", LIBRARY[family], install=INSTALL)


def open_clip_tags(model: str) -> list[str]:
    import open_clip

    return list(open_clip.list_pretrained_tags_by_model(model))


class HfFamily(BackboneFamily):
    prefix = "hf"
    framework = "torch"
    description = (
        "transformers image models by hub id or local snapshot directory (AutoModel + AutoImageProcessor; "
        "pooler_output, else the CLS token)"
    )

    def availability(self):
        return foundation_availability("hf")

    def models(self) -> list[str]:
        """The hub models already in the local Hugging Face cache (any other id or directory is accepted too)."""
        try:
            from huggingface_hub import constants

            names = os.listdir(constants.HF_HUB_CACHE)
        except Exception:
            return []
        return sorted(n.removeprefix("models--").replace("--", "/") for n in names if n.startswith("models--"))

    def backbone(self, model: str):
        local = hf_local_dir(model)
        if local is None and not HUB_ID.match(model):
            return None
        size = _processor_size(local or model) or [224, 224]
        what = f"local snapshot {local}" if local else f"Hugging Face hub {model}"
        return FoundationBackbone(
            "hf",
            model,
            {"weights": "pretrained", "input_size": size},
            f"transformers {what}: grayscale x3, the image processor's mean/std; pooled output or CLS token",
        )


class OpenClipFamily(BackboneFamily):
    prefix = "open_clip"
    framework = "torch"
    description = "open_clip models' visual towers (open_clip.list_models()); pretrained tags download once"

    def availability(self):
        return foundation_availability("open_clip")

    def models(self) -> list[str]:
        import open_clip

        return list(open_clip.list_models())

    def backbone(self, model: str):
        import open_clip

        hub = model.startswith("hf-hub:")
        if not hub and model not in open_clip.list_models():
            return None
        if hub:
            weights, size = "pretrained", [224, 224]
        else:
            from benchbox_torch import foundation_nets

            tags = open_clip_tags(model)
            weights, size = (tags[0] if tags else "none"), foundation_nets.open_clip_native_size(model)
        return FoundationBackbone(
            "open_clip",
            model,
            {"weights": weights, "input_size": size},
            f"open_clip {model} visual tower: grayscale x3, the model config's mean/std; its image embedding",
        )
