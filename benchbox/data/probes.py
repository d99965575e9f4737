"""Shortcut probes: image transforms and relabellings that show what a benchmark really measures.

Image probes (applied to the padded, resized images in memory, grayscale (N, H, W) or colour
(N, H, W, 3) alike; source files are never touched):

- ``lungs-blackout``: a centred rectangle (``fraction`` of the height and width) set to black —
  the lungs are gone, borders, markers and body outline remain (Maguolo & Nanni 2021).
- ``border-only``: everything but a frame ``frame`` wide (fraction of each side) set to black.
- ``centre-only``: the frame set to black, the centre kept.

Each is applied at training and test time (``apply = "train+test"``, default) or to the test
images only (``apply = "test"``). Label probes: ``source-as-label`` trains the same backbone to
predict the image's source instead of the diagnosis (DeGrave et al. 2021). Verdicts compare each
probe with the standard protocol using documented, configurable thresholds (the verdicts live in
the ``validity`` plugin; the thresholds are suite settings, validated here).
"""

from __future__ import annotations

import numpy as np

IMAGE_PROBES = ("lungs-blackout", "border-only", "centre-only")
LABEL_PROBES = ("source-as-label",)
PROBES = IMAGE_PROBES + LABEL_PROBES
PROBE_OPTIONS = {
    "lungs-blackout": {"fraction": 0.6, "apply": "train+test"},
    "border-only": {"frame": 0.12, "apply": "train+test"},
    "centre-only": {"frame": 0.12, "apply": "train+test"},
    "source-as-label": {},
}
THRESHOLDS = {
    "same_within_points": 10.0,  # a probe "keeps" the accuracy when within this many points
    "above_chance_points": 15.0,  # a probe "carries information" above chance by this many
    "source_accuracy": 0.95,
}  # source "predictable near-perfectly" at or above this accuracy


def _height_width(images: np.ndarray) -> tuple[int, int]:
    """(H, W) of one grayscale image (H, W) or of a batch, grayscale (N, H, W) or colour (N, H, W, 3)."""
    return tuple(images.shape[:2]) if images.ndim == 2 else tuple(images.shape[1:3])


def _region(images: np.ndarray, rows: slice, cols: slice) -> tuple:
    """The index of rows x cols in every image (and every channel) of ``images``."""
    return (rows, cols) if images.ndim == 2 else (slice(None), rows, cols)


def _frame(h: int, w: int, frame: float) -> tuple[int, int]:
    return int(round(frame * h)), int(round(frame * w))


def lungs_blackout(images: np.ndarray, fraction: float = 0.6) -> np.ndarray:
    """Black out a centred rectangle covering ``fraction`` of the height and of the width."""
    out = images.copy()
    h, w = _height_width(images)
    rh, rw = int(round(fraction * h)), int(round(fraction * w))
    top, left = (h - rh) // 2, (w - rw) // 2
    out[_region(out, slice(top, top + rh), slice(left, left + rw))] = 0
    return out


def border_only(images: np.ndarray, frame: float = 0.12) -> np.ndarray:
    """Keep a frame ``frame`` wide on each side; black out the centre."""
    out = images.copy()
    h, w = _height_width(images)
    fh, fw = _frame(h, w, frame)
    out[_region(out, slice(fh, h - fh), slice(fw, w - fw))] = 0
    return out


def centre_only(images: np.ndarray, frame: float = 0.12) -> np.ndarray:
    """Black out a frame ``frame`` wide on each side; keep the centre."""
    out = np.zeros_like(images)
    h, w = _height_width(images)
    fh, fw = _frame(h, w, frame)
    centre = _region(images, slice(fh, h - fh), slice(fw, w - fw))
    out[centre] = images[centre]
    return out


def transform(probe: str, images: np.ndarray, options: dict) -> np.ndarray:
    if probe == "lungs-blackout":
        return lungs_blackout(images, options.get("fraction", 0.6))
    if probe == "border-only":
        return border_only(images, options.get("frame", 0.12))
    if probe == "centre-only":
        return centre_only(images, options.get("frame", 0.12))
    raise ValueError(f"not an image probe: {probe}")
