"""The embedded default data set: synthetic, X-ray-like images generated on the fly.

Each image shows a bright body outline with two dark lung fields and rib texture. Classes differ
in the lungs, as the study's do: ``normal`` lungs are clear, ``pneumonia`` has one dense
consolidation in a lower lobe, ``covid`` has bilateral, peripheral, hazy opacities. Every patient
has an anatomy (size, position, contrast) shared by all their images, so patient-grouped folds
matter here as they do in real data. Deterministic: the same seed and id give the same pixels,
at any size.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from benchbox import hookimpl
from benchbox.contracts import Dataset, SampleSet
from benchbox.errors import DataError

CLASSES = ("covid", "pneumonia", "normal")


def _rng(*parts) -> np.random.Generator:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _blob(yy, xx, cy, cx, ry, rx):
    return np.exp(-(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2))


def render(
    label: str,
    patient: dict,
    image_seed: int,
    size: tuple[int, int],
    shortcut: bool = False,
    signal: bool = True,
    lesion_contrast: float = 1.0,
) -> np.ndarray:
    """One synthetic chest X-ray as uint8 (height, width); resolution independent.

    ``shortcut`` plants a class-specific marker in the top border (as a hospital's label or
    scanner mark would be); ``signal = False`` removes the disease from the lungs;
    ``lesion_contrast`` scales the disease's brightness (1.0: the default, faint at small sizes)."""
    h, w = size
    rng = np.random.default_rng(image_seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    yy, xx = yy / h, xx / w
    cx = 0.5 + patient["shift"] + rng.normal(0, 0.01)
    sc = patient["scale"]
    body = np.clip(1.6 * _blob(yy, xx, 0.6, cx, 0.62 * sc, 0.4 * sc) ** 0.6, 0, 1)
    img = 0.04 + 0.7 * body * patient["contrast"]
    lungs = np.zeros_like(img)
    centres = []
    for side in (-1, 1):
        lx = cx + side * 0.15 * sc
        centres.append(lx)
        lungs += np.clip(1.5 * _blob(yy, xx, 0.5, lx, 0.3 * sc, 0.11 * sc) ** 1.5, 0, 1)
    img -= 0.5 * lungs * body
    img += 0.05 * np.sin(yy * 70 + rng.uniform(0, 6.28)) * lungs  # ribs
    img += 0.25 * _blob(yy, xx, 0.45, cx, 0.35, 0.035)  # spine and mediastinum
    if not signal:
        pass
    elif label == "pneumonia":  # one dense lobar consolidation, lower lobe
        lx = centres[int(rng.integers(0, 2))]
        img += lesion_contrast * 0.55 * _blob(yy, xx, 0.62 + rng.normal(0, 0.03), lx, 0.12, 0.08) * lungs
    elif label == "covid":  # bilateral, peripheral, hazy (ground-glass) opacities
        for side, lx in zip((-1, 1), centres):
            haze = _blob(yy, xx, 0.58 + rng.normal(0, 0.04), lx + side * 0.05 * sc, 0.2, 0.06)
            img += lesion_contrast * (0.3 + 0.1 * rng.normal(0, 1, size=img.shape)) * haze * lungs
    if shortcut:  # bright markers in the top 8% whose number gives the class away (1, 2 or 3)
        for k in range({"covid": 1, "pneumonia": 2, "normal": 3}[label]):
            img[(yy > 0.01) & (yy < 0.07) & (np.abs(xx - 0.15 - 0.12 * k) < 0.04)] = 1.0
    img += rng.normal(0, 0.03, size=img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


class SyntheticXrays(Dataset):
    name = "synthetic"
    description = "X-ray-like synthetic images in 3 classes with patient groups (no downloads)"
    defaults = {
        "images": 120,
        "patients": 40,
        "positive_class": "covid",
        "shortcut": False,
        "signal": True,
        "lesion_contrast": 1.0,  # > 1: brighter lesions, an easier task (the quickstart's 64x80 inputs)
        "class_counts": {},  # e.g. {covid = 224, pneumonia = 700, normal = 504}: the study's counts
    }

    def check_options(self, options):
        problems = []
        n, n_patients = options.get("images"), options.get("patients")
        counts = options.get("class_counts") or {}
        if counts and all(isinstance(v, int) for v in counts.values()):
            n = sum(counts.values())  # class_counts replaces images
        if isinstance(n_patients, int) and n_patients < 3:
            problems.append(f"patients: must be at least 3 (one per class), got {n_patients}")
        if isinstance(n, int) and isinstance(n_patients, int) and n < n_patients:
            problems.append(f"images: must be at least patients ({n_patients}), each patient has an image; got {n}")
        if counts:
            bad = [k for k, v in counts.items() if k not in CLASSES or not isinstance(v, int) or v < 1]
            if bad or set(counts) != set(CLASSES):
                problems.append(
                    f"class_counts: give a count >= 1 for each of {', '.join(CLASSES)} (e.g. "
                    f"{{covid = 224, pneumonia = 700, normal = 504}}), got {counts!r}"
                )
        contrast = options.get("lesion_contrast", 1.0)
        if isinstance(contrast, bool) or not isinstance(contrast, (int, float)) or not 0 < contrast <= 5:
            problems.append(f"lesion_contrast: must be a number in (0, 5] (1.0 is the default), got {contrast!r}")
        if options.get("positive_class") not in CLASSES:
            problems.append(
                f"positive_class: must be one of {', '.join(CLASSES)}, got {options.get('positive_class')!r}"
            )
        return problems

    def samples(self, options, seed, data_dir):
        n, n_patients = int(options["images"]), int(options["patients"])
        counts = dict(options.get("class_counts") or {})
        if counts:
            n = sum(counts.values())
        if n_patients < 3 or n < n_patients:
            raise DataError(
                f"synthetic: images = {n}, patients = {n_patients}: needs patients >= 3 and images >= "
                "patients (each patient has at least one image)"
            )
        order = _rng(seed, "classes").permutation(n_patients)
        if counts:  # patients per class in proportion to its images, at least one each
            share = [max(1, round(n_patients * counts[c] / n)) for c in CLASSES]
            share[int(np.argmax(share))] += n_patients - sum(share)
            labels = [c for c, k in zip(CLASSES, share) for _ in range(k)]
            patient_label = {int(p): labels[i] for i, p in enumerate(order)}
        else:
            patient_label = {p: CLASSES[i % 3] for i, p in enumerate(order)}
        patients = {}
        for p in range(n_patients):
            r = _rng(seed, "patient", p)
            patients[p] = {"shift": r.normal(0, 0.03), "scale": r.uniform(0.9, 1.1), "contrast": r.uniform(0.8, 1.2)}
        if counts:  # each class's images spread over its own patients
            owner = np.concatenate(
                [
                    np.resize(members, counts[c]) if counts[c] >= len(members) else members[: counts[c]]
                    for c in CLASSES
                    for members in [np.array(sorted(p for p, lab in patient_label.items() if lab == c))]
                ]
            )
        else:
            owner = np.concatenate(
                [np.arange(n_patients), _rng(seed, "owners").integers(0, n_patients, n - n_patients)]
            )
        rows = [
            {
                "id": f"syn-{i:05d}",
                "label": patient_label[int(p)],
                "group": f"patient-{int(p):04d}",
                "source": "synthetic",
                "patient_index": int(p),
            }
            for i, p in enumerate(owner)
        ]
        table = pd.DataFrame(rows)
        contrast = float(options.get("lesion_contrast", 1.0))

        def load(sub: pd.DataFrame, size):
            out = np.empty((len(sub), *size), dtype=np.uint8)
            for k, row in enumerate(sub.itertuples(index=False)):
                image_seed = int.from_bytes(hashlib.sha256(f"{seed}/{row.id}".encode()).digest()[:8], "little")
                out[k] = render(
                    row.label,
                    patients[row.patient_index],
                    image_seed,
                    size,
                    shortcut=bool(options["shortcut"]),
                    signal=bool(options["signal"]),
                    lesion_contrast=contrast,
                )
            return out

        return SampleSet(
            table=table,
            classes=CLASSES,
            positive_class=options["positive_class"],
            load=load,
            fingerprint=f"synthetic:seed={seed}:n={n}:patients={n_patients}"
            f":shortcut={options['shortcut']}:signal={options['signal']}"
            + (f":counts={','.join(f'{c}={counts[c]}' for c in CLASSES)}" if counts else "")
            + (f":lesion_contrast={contrast:g}" if contrast != 1.0 else ""),
        )


@hookimpl
def benchbox_datasets():
    return [SyntheticXrays()]
