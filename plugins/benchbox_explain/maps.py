"""Grad-CAM maps of a run's fold models: which test images, how maps are checked and stored, and the
"where does it look" number (framework-free; the backbones compute the maps, ``Backbone.explain``).

A suite with an ``[explain]`` table turns on this plugin's fold inspector (inspector.py): every fold,
right after its test fold is predicted, explains a fixed, seeded sample of that fold's test images per
class with the fold's own model. The maps are small (the explained layer's resolution, at most
``MAX_SIDE`` per side), stored as float16 in ``explanations/<cell>__foldNN.npz`` beside the fold record
(the run store writes the arrays the inspector keeps), and upsampled only when drawn.

The heat share: for a map normalised to sum to one over the image, the share inside the central
box (the middle ``centre`` of the height and of the width, 60% by default: where the lungs are,
the box the lungs-blackout probe blacks out) and inside the border frame (the outer ``frame`` of
each side, 10% by default: where markers, text and collimation edges are). A map spread evenly
puts 36% in each with the defaults (0.6 x 0.6 = 0.36; 1 - 0.8 x 0.8 = 0.36).
"""

from __future__ import annotations

import hashlib
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: the [explain] table of a suite: key -> default (its type too; ``layer`` may also be a table)
EXPLAIN_DEFAULTS = {"images_per_class": 4, "seed": 0, "layer": "auto", "centre": 0.6, "frame": 0.1}
MAX_IMAGES_PER_CLASS = 64
THUMB_SIDE = 160  # the explained images are stored this small, for the panels
MAX_SIDE = 28  # stored maps are at most this many cells per side (a 7x7 map stays 7x7)
FOLDER = "explanations"


def explain_layer(settings: dict, backbone: str) -> str:
    """[explain] layer for one backbone: one name for all, or ``{ ALIAS = "name" }`` ("auto" for the rest)."""
    layer = settings.get("layer", "auto")
    return str(layer.get(backbone, "auto")) if isinstance(layer, dict) else str(layer)


def check_settings(table: dict) -> list[str]:
    """Problems with an [explain] table's values, each "key: message" (keys and types are checked by the
    suite against EXPLAIN_DEFAULTS)."""
    problems = []
    n = table.get("images_per_class", EXPLAIN_DEFAULTS["images_per_class"])
    if isinstance(n, int) and not 1 <= n <= MAX_IMAGES_PER_CLASS:
        problems.append(f"images_per_class: must be between 1 and {MAX_IMAGES_PER_CLASS}, got {n}")
    seed = table.get("seed", 0)
    if isinstance(seed, int) and not 0 <= seed <= 2**32 - 1:
        problems.append(f"seed: must be between 0 and 2**32 - 1, got {seed}")
    layer = table.get("layer", "auto")
    if isinstance(layer, str) and not layer.strip():
        problems.append('layer: must be "auto" (the backbone\'s last feature map) or a layer/module name')
    centre = table.get("centre", 0.6)
    if isinstance(centre, (int, float)) and not 0 < centre < 1:
        problems.append(f"centre: the central box's share of height and width, between 0 and 1; got {centre}")
    frame = table.get("frame", 0.1)
    if isinstance(frame, (int, float)) and not 0 < frame < 0.5:
        problems.append(f"frame: the border frame's share of each side, between 0 and 0.5; got {frame}")
    return problems


def _order(ids: Sequence[str], seed: int) -> np.ndarray:
    """A seeded order of images that depends on their ids only (the same for every backbone)."""
    keys = [hashlib.sha256(f"{seed}/{i}".encode()).hexdigest() for i in ids]
    return np.array(sorted(range(len(ids)), key=lambda k: keys[k]), dtype=np.int64)


def select(y_true, predicted, ids: Sequence[str], per_class: int, seed: int, num_classes: int) -> np.ndarray:
    """Indices of the test images to explain: per true class up to ``per_class`` images, half of
    them wrongly predicted where there are such (the rest correct), taken in a seeded order of
    the image ids, so backbones that predict the same explain the same images."""
    y_true, predicted = np.asarray(y_true), np.asarray(predicted)
    order = _order([str(i) for i in ids], seed)
    chosen = []
    for c in range(num_classes):
        members = [int(i) for i in order if y_true[i] == c]
        right = [i for i in members if predicted[i] == c]
        wrong = [i for i in members if predicted[i] != c]
        n_wrong = min(len(wrong), per_class // 2)
        n_right = min(len(right), per_class - n_wrong)
        n_wrong = min(len(wrong), per_class - n_right)  # too few correct: more wrong ones
        chosen += right[:n_right] + wrong[:n_wrong]
    return np.array(chosen, dtype=np.int64)


def thumbnails(images: np.ndarray, max_side: int = THUMB_SIDE) -> np.ndarray:
    """The explained images, kept small (uint8, at most ``max_side`` per side) to draw the panels;
    grayscale (N, H, W) or colour (N, H, W, 3), kept as they are."""
    from PIL import Image

    h, w = images.shape[1:3]
    scale = min(1.0, max_side / max(h, w))
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    if (th, tw) == (h, w):
        return np.ascontiguousarray(images, dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(im).resize((tw, th), Image.BILINEAR)) for im in images]).astype(
        np.uint8
    )


def shrink(maps: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """Area-average maps larger than ``max_side`` per side down to it (smaller ones are kept)."""
    n, h, w = maps.shape
    th, tw = min(h, max_side), min(w, max_side)
    if (th, tw) == (h, w):
        return maps
    ys = np.linspace(0, h, th + 1).round().astype(int)
    xs = np.linspace(0, w, tw + 1).round().astype(int)
    out = np.empty((n, th, tw), dtype=np.float64)
    for a in range(th):
        for b in range(tw):
            out[:, a, b] = maps[:, ys[a] : ys[a + 1], xs[b] : xs[b + 1]].mean(axis=(1, 2))
    return out


def check_maps(maps, n: int, who: str) -> np.ndarray:
    """What ``Backbone.explain`` must return: (n, h, w), finite, in [0, 1]; returned as float16,
    each map rescaled so its maximum is 1 (an all-zero map stays zero) and shrunk to MAX_SIDE."""
    try:
        arr = np.asarray(maps, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{who} returned heat maps that are not numbers ({exc})") from None
    if arr.ndim != 3 or arr.shape[0] != n or min(arr.shape[1:], default=0) < 1:
        raise ValueError(f"{who} returned heat maps of shape {arr.shape}; expected ({n}, height, width)")
    if not np.isfinite(arr).all():
        raise ValueError(f"{who} returned heat maps with NaN or infinity")
    if arr.size and (arr.min() < -1e-6 or arr.max() > 1 + 1e-6):
        raise ValueError(f"{who} returned heat maps outside [0, 1] (min {arr.min():.3g}, max {arr.max():.3g})")
    arr = shrink(np.clip(arr, 0, 1))
    peak = arr.max(axis=(1, 2), keepdims=True) if arr.size else arr
    arr = np.divide(arr, peak, out=np.zeros_like(arr), where=peak > 0)
    return arr.astype(np.float16)


def upsample(heat: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One stored map at image size (bilinear, cell centres aligned), for drawing and the heat share."""
    h, w = heat.shape
    H, W = size
    y = np.clip((np.arange(H) + 0.5) * h / H - 0.5, 0, h - 1)
    x = np.clip((np.arange(W) + 0.5) * w / W - 0.5, 0, w - 1)
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    m = heat.astype(np.float64)
    top = m[y0][:, x0] * (1 - fx) + m[y0][:, x1] * fx
    bottom = m[y1][:, x0] * (1 - fx) + m[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


def regions(size: tuple[int, int], centre: float = 0.6, frame: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (central box, border frame) of an image of ``size`` (height, width); the same
    rounding as the lungs-blackout probe's box."""
    H, W = size
    box = np.zeros((H, W), dtype=bool)
    rh, rw = int(round(centre * H)), int(round(centre * W))
    top, left = (H - rh) // 2, (W - rw) // 2
    box[top : top + rh, left : left + rw] = True
    fh, fw = int(round(frame * H)), int(round(frame * W))
    border = np.ones((H, W), dtype=bool)
    border[fh : H - fh, fw : W - fw] = False
    return box, border


def heat_share(maps: np.ndarray, centre: float = 0.6, frame: float = 0.1, size: tuple[int, int] | None = None):
    """Per map: (share of the heat in the central box, share in the border frame), each in [0, 1];
    NaN for a map with no heat. Maps are upsampled to ``size`` (default: 8x their own) first, so
    the boxes are cut at pixel precision, not at feature-map cells."""
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim == 2:
        maps = maps[None]
    n, h, w = maps.shape
    size = size or (8 * h, 8 * w)
    box, border = regions(size, centre, frame)
    out = np.full((n, 2), np.nan)
    for i in range(n):
        m = upsample(maps[i], size) if (h, w) != tuple(size) else maps[i]
        total = m.sum()
        if total > 0:
            out[i] = m[box].sum() / total, m[border].sum() / total
    return out


# --- storage: the run store writes the arrays ``inspect`` keeps (benchbox.execute.store.arrays_npz) ------
def load_npz(path: Path) -> dict:
    """One fold's explanations; ValueError saying what is wrong when the file is missing or damaged
    (truncated or not a zip archive, a field missing, maps of the wrong shape)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            out = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"not a readable .npz archive ({type(exc).__name__}: {exc})") from None
    need = ("maps", "ids", "y_true", "predicted", "probability", "classes")
    missing = [k for k in need if k not in out]
    if missing:
        raise ValueError(f"fields {missing} missing")
    if out["maps"].ndim != 3 or len(out["maps"]) != len(out["ids"]):
        raise ValueError(f"maps of shape {out['maps'].shape} for {len(out['ids'])} images")
    return out


def read_run(run_dir: Path, problems: list[str] | None = None) -> list[dict]:
    """Every stored fold's explanations of a run, each with ``cell`` (its file's cell slug) and
    ``fold``, in file order; damaged files are skipped, each named in ``problems``."""
    out = []
    for p in sorted((Path(run_dir) / FOLDER).glob("*.npz")):
        try:
            data = load_npz(p)
        except ValueError as exc:
            if problems is not None:
                problems.append(
                    f"{p}: skipped damaged Grad-CAM maps ({exc}); delete the file and its fold record in folds/, "
                    "then rerun `benchbox run` on the suite to redo that fold"
                )
            continue
        stem = p.stem
        cell, _, fold = stem.rpartition("__fold")
        data["cell"], data["fold"], data["path"] = cell, int(fold) if fold.isdigit() else -1, p
        out.append(data)
    return out


def stored(run_dir: Path, cells: dict | None = None, problems: list[str] | None = None) -> list[dict]:
    """The run's explanations, each with its ``cell`` as a CellKey when ``cells`` (slug -> CellKey)
    knows it; files of cells or folds without a record are left out when ``cells`` is given; damaged
    files are named in ``problems``."""
    out = []
    for data in read_run(run_dir, problems):
        if cells is not None:
            key = cells.get(data["cell"])
            if key is None:
                continue
            data["cell"] = key
        out.append(data)
    return out
