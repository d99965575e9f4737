"""Shortcut probes: checks of what a COVID X-ray benchmark really measures.

Image probes (applied to the padded, resized images in memory; source files are never touched):

- ``lungs-blackout``: a centred rectangle (``fraction`` of the height and width) set to black —
  the lungs are gone, borders, markers and body outline remain (Maguolo & Nanni 2021).
- ``border-only``: everything but a frame ``frame`` wide (fraction of each side) set to black.
- ``centre-only``: the frame set to black, the centre kept.

Each is applied at training and test time (``apply = "train+test"``, default) or to the test
images only (``apply = "test"``). Label probes: ``source-as-label`` trains the same backbone to
predict the image's source instead of the diagnosis (DeGrave et al. 2021). Verdicts compare each
probe with the standard protocol using documented, configurable thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IMAGE_PROBES = ("lungs-blackout", "border-only", "centre-only")
LABEL_PROBES = ("source-as-label",)
PROBES = IMAGE_PROBES + LABEL_PROBES
PROBE_OPTIONS = {"lungs-blackout": {"fraction": 0.6, "apply": "train+test"},
                 "border-only": {"frame": 0.12, "apply": "train+test"},
                 "centre-only": {"frame": 0.12, "apply": "train+test"},
                 "source-as-label": {}}
THRESHOLDS = {"same_within_points": 10.0,  # a probe "keeps" the accuracy when within this many points
              "above_chance_points": 15.0,  # a probe "carries information" above chance by this many
              "source_accuracy": 0.95}  # source "predictable near-perfectly" at or above this accuracy


def _frame(h: int, w: int, frame: float) -> tuple[int, int]:
    return int(round(frame * h)), int(round(frame * w))


def lungs_blackout(images: np.ndarray, fraction: float = 0.6) -> np.ndarray:
    """Black out a centred rectangle covering ``fraction`` of the height and of the width."""
    out = images.copy()
    h, w = images.shape[-2:]
    rh, rw = int(round(fraction * h)), int(round(fraction * w))
    top, left = (h - rh) // 2, (w - rw) // 2
    out[..., top:top + rh, left:left + rw] = 0
    return out


def border_only(images: np.ndarray, frame: float = 0.12) -> np.ndarray:
    """Keep a frame ``frame`` wide on each side; black out the centre."""
    out = images.copy()
    h, w = images.shape[-2:]
    fh, fw = _frame(h, w, frame)
    out[..., fh:h - fh, fw:w - fw] = 0
    return out


def centre_only(images: np.ndarray, frame: float = 0.12) -> np.ndarray:
    """Black out a frame ``frame`` wide on each side; keep the centre."""
    out = np.zeros_like(images)
    h, w = images.shape[-2:]
    fh, fw = _frame(h, w, frame)
    out[..., fh:h - fh, fw:w - fw] = images[..., fh:h - fh, fw:w - fw]
    return out


def transform(probe: str, images: np.ndarray, options: dict) -> np.ndarray:
    if probe == "lungs-blackout":
        return lungs_blackout(images, options.get("fraction", 0.6))
    if probe == "border-only":
        return border_only(images, options.get("frame", 0.12))
    if probe == "centre-only":
        return centre_only(images, options.get("frame", 0.12))
    raise ValueError(f"not an image probe: {probe}")


@dataclass
class Verdict:
    probe: str
    fires: bool
    text: str


def verdict(probe: str, standard: dict, probed: dict, chance: float, thresholds: dict,
            source_coincides: bool | None = None, options: dict | None = None) -> Verdict:
    """A plain-language reading of one probe against the standard protocol (docs/validity.md)."""
    options = options or {}
    same, above = thresholds["same_within_points"], thresholds["above_chance_points"]
    acc, base = 100 * probed.get("accuracy_3class", np.nan), 100 * standard.get("accuracy_3class", np.nan)
    chance_pts = 100 * chance
    if probe == "source-as-label":
        src_acc = probed.get("accuracy_3class", np.nan)
        if src_acc >= thresholds["source_accuracy"] and source_coincides:
            return Verdict(probe, True, f"the image source is predicted with {100 * src_acc:.1f}% accuracy and the "
                           "classes coincide with the sources: the headline cannot separate disease from source")
        if src_acc >= thresholds["source_accuracy"]:
            return Verdict(probe, True, f"the image source is predicted with {100 * src_acc:.1f}% accuracy: the "
                           "model can tell the sources apart, a shortcut wherever classes and sources are linked")
        return Verdict(probe, False, f"the source is predicted with {100 * src_acc:.1f}% accuracy (below "
                       f"{100 * thresholds['source_accuracy']:.0f}%): no near-perfect source signal")
    if probe in ("lungs-blackout", "border-only"):
        what = ("with the lungs blacked out" if probe == "lungs-blackout"
                else f"from a {100 * options.get('frame', 0.12):.0f}% border alone")
        if acc >= base - same and acc >= chance_pts + above:
            return Verdict(probe, True, f"3-class accuracy {what} is {acc:.1f}%, within {base - acc:.1f} points of the "
                           f"standard protocol ({base:.1f}%): the model does not need the lungs")
        if acc >= chance_pts + above:
            return Verdict(probe, True, f"3-class accuracy {what} is {acc:.1f}% (chance {chance_pts:.1f}%, standard "
                           f"{base:.1f}%): information outside the lungs predicts the class")
        return Verdict(probe, False, f"3-class accuracy {what} is {acc:.1f}%, near chance ({chance_pts:.1f}%): no "
                       "shortcut found outside the lungs by this probe")
    if probe == "centre-only":
        if acc >= base - same:
            return Verdict(probe, False, f"3-class accuracy on the centre alone is {acc:.1f}%, within {base - acc:.1f} "
                           f"points of the standard ({base:.1f}%): the centre carries the signal")
        return Verdict(probe, True, f"3-class accuracy on the centre alone is {acc:.1f}%, {base - acc:.1f} points "
                       f"below the standard ({base:.1f}%): the border carries part of the signal")
    raise ValueError(probe)
