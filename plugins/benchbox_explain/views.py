"""The views of a run's stored Grad-CAM maps: the heat-share table, the notes beside it, and the panels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchbox_explain.maps import MAX_SIDE, heat_share, upsample

NO_EXPLANATIONS = (
    "{run} holds no Grad-CAM explanations. Explanations are computed from each fold's model while the "
    "fold runs, and benchbox keeps no trained models, so finished folds cannot be explained afterwards "
    "(a resume does not add them: it would need retraining). Add an [explain] table to the suite, e.g.\n\n"
    "    [explain]\n    images_per_class = 4\n\n"
    "and run it again with `benchbox run SUITE`: the suite's content changed, so it trains into a new run "
    "directory (the metrics are the same; explaining only reads the fold models)."
)


def _class_accuracy(records, label: int) -> float:
    """Of every test image of class ``label`` in the cell's records (all of them, not only the explained
    sample), the share predicted right: the row's own class, so a class the probe leaves intact shows."""
    y = np.concatenate([r.y_true for r in records]) if records else np.zeros(0)
    p = np.concatenate([r.predicted for r in records]) if records else np.zeros(0)
    sel = y == label
    return float((p[sel] == label).mean()) if sel.any() else float("nan")


def _by_cell(explained: list[dict]) -> dict:
    """The stored maps' parts (one per fold) grouped by cell, in the order they came."""
    by_cell: dict = {}
    for data in explained:
        by_cell.setdefault(data["cell"], []).append(data)
    return by_cell


def share_frame(explained: list[dict], records_by_cell: dict | None = None, centre: float = 0.6, frame: float = 0.1):
    """One row per cell and true class: explained images, mean share of the heat in the central box
    and in the border frame, and, beside them, the accuracy on that class's test images in the cell and
    in its lungs-blackout probe cell when the run has one."""
    import pandas as pd

    rows = []
    by_cell = _by_cell(explained)
    for cell, parts in by_cell.items():
        classes = [str(c) for c in parts[0]["classes"]]
        maps = np.concatenate([p["maps"] for p in parts]).astype(np.float64)
        y = np.concatenate([p["y_true"] for p in parts])
        size = tuple(int(v) for v in parts[0]["input_size"])
        shares = heat_share(maps, centre, frame, size=size)
        probe = getattr(cell, "probe", None)
        own, blacked = [], []
        if records_by_cell is not None:
            own = records_by_cell.get(cell, [])
            if not probe:
                probed = [k for k in records_by_cell if k.dataset == cell.dataset and k.backbone == cell.backbone]
                probed = [k for k in probed if k.probe == "lungs-blackout"]
                blacked = records_by_cell[probed[0]] if probed else []
        grid = map_label(parts)
        for c, name in enumerate(classes):
            sel = y == c
            if not sel.any():
                continue
            s = shares[sel]
            rows.append(
                {
                    "data": getattr(cell, "dataset", str(cell)) + (f" + {probe}" if probe else ""),
                    "backbone": getattr(cell, "backbone", ""),
                    "class": name,
                    "images": int(sel.sum()),
                    "map": grid,
                    "centre heat %": _pct(np.nanmean(s[:, 0]) if np.isfinite(s[:, 0]).any() else np.nan),
                    "border heat %": _pct(np.nanmean(s[:, 1]) if np.isfinite(s[:, 1]).any() else np.nan),
                    "accuracy %": _pct(_class_accuracy(own, c)),
                    "lungs-blackout accuracy %": _pct(_class_accuracy(blacked, c)),
                }
            )
    frame_ = pd.DataFrame(rows)
    if len(frame_) and frame_["lungs-blackout accuracy %"].eq("").all():
        frame_ = frame_.drop(columns=["lungs-blackout accuracy %"])
    return frame_


def _pct(v) -> str:
    return "" if v is None or not np.isfinite(v) else f"{100 * v:.1f}"


#: a map with a side under this many cells cannot say where in the image the heat is
COARSE_SIDE = 4
#: maps whose median (max - min) is under this are nearly flat (each map is scaled to a maximum of 1)
FLAT_RANGE = 0.25


def map_label(parts: list[dict]) -> str:
    """The stored maps' size, e.g. ``2x3`` (the feature map's own resolution; ``28x28+`` when it was
    larger and shrunk to MAX_SIDE); sizes joined by ``/`` when folds differ."""
    sizes = dict.fromkeys(tuple(int(v) for v in p["maps"].shape[1:]) for p in parts)
    return "/".join(f"{h}x{w}" + ("+" if max(h, w) >= MAX_SIDE else "") for h, w in sizes)


def coarse_notes(explained: list[dict]) -> list[str]:
    """A plain note per cell whose maps are too coarse to locate anything: a side under ``COARSE_SIDE``
    cells, or nearly flat (median max - min under ``FLAT_RANGE``). Their heat shares then reflect the
    geometry of the boxes, not where the network looks; the fix is an earlier, finer feature map."""
    by_cell = _by_cell(explained)
    found: dict[str, list[str]] = {}  # what is wrong -> the cells it is wrong for
    for cell, parts in by_cell.items():
        maps = np.concatenate([p["maps"] for p in parts]).astype(np.float64)
        if not len(maps):
            continue
        h, w = maps.shape[1:]
        lit = maps.max(axis=(1, 2)) > 0
        spread = float(np.median(maps[lit].max(axis=(1, 2)) - maps[lit].min(axis=(1, 2)))) if lit.any() else 0.0
        small, flat = min(h, w) < COARSE_SIDE, spread < FLAT_RANGE
        if not (small or flat):
            continue
        layer = str(parts[0].get("layer", "auto"))
        size = [int(v) for v in parts[0].get("input_size", (0, 0))]
        why = []
        if small:
            why.append(
                f"{map_label(parts)} cells at a {size[0]}x{size[1]} input (one cell covers about "
                f"{size[0] // h}x{size[1] // w} pixels)"
            )
        if flat:
            why.append(f"nearly flat (median max - min {spread:.2f} of the peak)")
        where = "the backbone's last feature map" if layer == "auto" else f"layer {layer!r}"
        found.setdefault(f"the Grad-CAM maps ({where}) are {' and '.join(why)}", []).append(str(cell))
    return [
        f"{', '.join(cells)}: {what}: too coarse to locate anything, so the heat shares reflect the geometry of "
        f'the boxes, not where the network looks. Explain an earlier, finer feature map: layer = "..." in '
        f"[explain] (a Keras layer or PyTorch module name; docs/validity.md, 'Choosing the layer')."
        for what, cells in found.items()
    ]


def share_notes(centre: float = 0.6, frame: float = 0.1) -> list[str]:
    even_c, even_b = centre * centre, 1 - (1 - 2 * frame) ** 2
    return [
        f"Heat share: each Grad-CAM map (for the predicted class, by the fold's own model) is scaled to sum to "
        f"one; 'centre' is its share inside the central box (the middle {100 * centre:.0f}% of height and width, "
        f"where the lungs are), 'border' its share in the outer {100 * frame:.0f}% frame of each side (markers, "
        f"text, edges). A map spread evenly gives {100 * even_c:.0f}% and {100 * even_b:.0f}%.",
        "accuracy %: of all the cell's test images of that class (not only the explained ones), the share "
        "predicted right; lungs-blackout accuracy %: the same with the lungs blacked out (the probe's cell). "
        "Read the heat beside it: heat on the border and an accuracy that survives the "
        "blackout both say the network uses something other than the lungs. Grad-CAM is coarse (one cell of "
        "the last feature map covers many pixels) and shows where the class score is sensitive, not why.",
    ]


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_.+" else "-" for ch in str(text))


def draw_panels(explained: list[dict], out_dir: Path, per_class: int = 4) -> list[Path]:
    """One PNG per cell (plots/gradcam__<data>__<backbone>.png): a row per true class, up to
    ``per_class`` explained images (wrong predictions first where there are some, then correct;
    folds in order), each as the image and its heat overlay, captioned true/predicted/probability."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_cell = _by_cell(explained)
    written = []
    for cell, parts in by_cell.items():
        classes = [str(c) for c in parts[0]["classes"]]
        items = []
        for p in sorted(parts, key=lambda d: d["fold"]):
            for i in range(len(p["ids"])):
                items.append((p, i))
        rows = []
        for c in range(len(classes)):
            mine = [(p, i) for p, i in items if int(p["y_true"][i]) == c]
            wrong = [t for t in mine if int(t[0]["predicted"][t[1]]) != c]
            right = [t for t in mine if int(t[0]["predicted"][t[1]]) == c]
            n_wrong = min(len(wrong), per_class // 2)
            n_right = min(len(right), per_class - n_wrong)
            n_wrong = min(len(wrong), per_class - n_right)
            take = wrong[:n_wrong] + right[:n_right]
            if take:
                rows.append((classes[c], take))
        if not rows:
            continue
        ncols = 2 * max(len(t) for _, t in rows)
        fig, axes = plt.subplots(len(rows), ncols, figsize=(1.6 * ncols, 2.0 * len(rows)), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for r, (name, take) in enumerate(rows):
            for k, (p, i) in enumerate(take):
                image = p["images"][i]
                heat = upsample(p["maps"][i].astype(np.float64), image.shape[:2])  # gray (H, W) or RGB (H, W, 3)
                pred = int(p["predicted"][i])
                axes[r, 2 * k].imshow(image, cmap="gray", vmin=0, vmax=255)
                axes[r, 2 * k].set_title(f"{str(p['ids'][i]).rsplit('/', 1)[-1]}, fold {p['fold']}", fontsize=6)
                axes[r, 2 * k + 1].imshow(image, cmap="gray", vmin=0, vmax=255)
                axes[r, 2 * k + 1].imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
                mark = "" if pred == int(p["y_true"][i]) else "  (wrong)"
                axes[r, 2 * k + 1].set_title(
                    f"true {name} / pred {classes[pred]}\np = {float(p['probability'][i]):.2f}{mark}",
                    fontsize=6,
                    color="black" if not mark else "firebrick",
                )
        label = getattr(cell, "label", str(cell))
        fig.suptitle(f"Grad-CAM: {label} x {getattr(cell, 'backbone', '')}", fontsize=9)
        fig.tight_layout()
        slug = getattr(cell, "slug", _slug(cell))
        path = out_dir / f"gradcam__{slug}.png"
        tmp = path.with_suffix(".tmp.png")
        fig.savefig(tmp, dpi=110)
        plt.close(fig)
        tmp.replace(path)
        written.append(path)
    return written
