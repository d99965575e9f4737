"""What the timm and TorchXRayVision families' options mean, torch-free: read by families.py (to
validate a suite) and family_nets.py (to build the network), so neither imports the other for it."""

from __future__ import annotations


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
