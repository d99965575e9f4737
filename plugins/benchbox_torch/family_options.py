"""What the timm, TorchXRayVision, hf and open_clip families' options mean, torch-free: read by the families (to
validate a suite) and family_nets.py (to build the network), so neither imports the other for it."""

from __future__ import annotations

import os


def freeze_value(value):
    """A freeze setting as the suite gave it; a number written as text ("0.5") is a fraction."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def weights_kind(family: str, weights: str) -> str:
    """'none', 'file', or the family's downloadable weights ('imagenet' for timm, 'pretrained' for txv)."""
    word = weights.lower()
    if word == "none":
        return "none"
    if word == ("imagenet" if family == "timm" else "pretrained"):
        return word
    return "file"


# --- hf/ and open_clip/ (foundation.py, foundation_nets.py): framework-free, shared by both ---------------
def foundation_weights_kind(family: str, weights: str) -> str:
    """hf: 'pretrained' | 'none' | 'snapshot' (a directory); open_clip: 'tag' | 'none' | 'file'."""
    word = str(weights).lower()
    if word == "none":
        return "none"
    if family == "hf":
        return "pretrained" if word == "pretrained" else "snapshot"
    path = os.path.expanduser(str(weights))
    return "file" if os.sep in str(weights) or os.path.isfile(path) or path.endswith(_CHECKPOINTS) else "tag"


_CHECKPOINTS = (".bin", ".pt", ".pth", ".safetensors")


def hf_local_dir(model: str) -> str | None:
    path = os.path.expanduser(model)
    return os.path.abspath(path) if os.path.isdir(path) else None


def offline_hint(family: str, model: str) -> str:
    """How to run without a network: one line, for every error that could be a missing download."""
    if family == "hf":
        return (
            f"without a network, download the snapshot elsewhere (`huggingface-cli download {model} "
            '--local-dir DIR`), copy DIR over and set weights = "DIR" in the suite\'s [backbones.*] table '
            '(or plugin = "hf/DIR"); docs/backbones.md, "Foundation encoders"'
        )
    return (
        f"without a network, download the checkpoint of {model} elsewhere and set weights = "
        '"/path/to/open_clip_model.safetensors" (or .bin) in the suite\'s [backbones.*] table, or weights = "none"; '
        'docs/backbones.md, "Foundation encoders"'
    )
