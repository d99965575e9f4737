"""The study's chest X-ray data sets, read from the sources' original layouts.

- ``cohen``: every frontal X-ray of Cohen's covid-chestxray-dataset (covid, bacterial, viral,
  normal, other), patient-grouped, with hospital provenance.
- ``kermany``: Kermany et al.'s pediatric chest_xray (bacterial, viral, normal).
- ``dataset_1``: the study's Dataset_1, 224 COVID-19 / 700 bacterial pneumonia / 504 normal.
- ``dataset_2``: the study's Dataset_2, 224 COVID-19 / 714 pneumonia (400 bacterial + 314 viral) /
  504 normal.

Compositions are drawn deterministically with the suite's seed. When a source holds fewer
images than asked for, all of them are used and the shortfall is reported (a warning and a note
in the run manifest), never hidden.

Every one of them takes ``root``: a folder holding the sources' layout (or, for ``cohen`` and
``kermany``, the source's own folder), used instead of --data-dir for that data set, so one suite
can train on one copy and test on another. ``kermany`` takes ``split`` ("all", "train", "test" or
"val": the folder of the official release the images come from).
"""

from __future__ import annotations

import functools
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from benchbox import hookimpl
from benchbox.contracts import Dataset, SampleSet
from benchbox.data.datadir import data_root
from benchbox.data.images import shared_decode_cache, unreadable_reason
from benchbox.errors import DataError
from benchbox_xray.sources import read_cohen, read_kermany


def load_images(table: pd.DataFrame, size, skip_unreadable: bool | None = None) -> np.ndarray:
    """Pixels of ``table``'s images; ``skip_unreadable`` (the data set's setting) shapes the advice
    of an error about a file that cannot be decoded."""
    return shared_decode_cache().load_many(table["path"].tolist(), tuple(size), skip_unreadable=skip_unreadable)


def drop_unreadable(table: pd.DataFrame, notes: list[str], warnings: list[str] | None = None) -> pd.DataFrame:
    """Drop images that cannot be decoded. Each is decoded fully (Pillow's ``verify()`` passes a
    truncated JPEG; ``load()`` does not), so what is kept will load."""
    bad = [(path, reason) for path in table["path"] if (reason := unreadable_reason(path)) is not None]
    if bad:
        notes.append(f"skipped {len(bad)} unreadable image(s): {', '.join(p for p, _ in bad)}")
        if warnings is not None:
            shown = "; ".join(f"{p} ({r})" for p, r in bad[:10]) + (
                f"; and {len(bad) - 10} more" if len(bad) > 10 else ""
            )
            warnings.append(f"skipped {len(bad)} unreadable image(s) (skip_unreadable = true): {shown}")
    return table[~table["path"].isin({p for p, _ in bad})].reset_index(drop=True)


def source_root(name: str, options, data_dir) -> Path:
    """The data set's own ``root`` option when set (relative: to the working directory, else to the
    data root), else the data root (--data-dir, $BENCHBOX_DATA, the user cache)."""
    root = str(options.get("root") or "").strip()
    if not root:
        return data_root(data_dir)
    path = Path(root).expanduser()
    if path.is_absolute() or path.exists():
        candidate = path
    else:
        candidate = data_root(data_dir) / path
    if not candidate.is_dir():
        tried = str(path.resolve()) + ("" if path.is_absolute() else f" or {data_root(data_dir) / path}")
        raise DataError(
            f"{name}: root = {root!r} is not a folder (looked for {tried}); set root to the folder that "
            "holds the source's layout (see docs/datasets.md) or leave it out to use --data-dir"
        )
    return candidate


KERMANY_SPLITS = ("all", "train", "test", "val")


def _read(reader, root, warnings):
    return reader(root, warnings) if reader is read_cohen else reader(root)


class SourceDataset(Dataset):
    """All images of one source, with their fine-grained labels."""

    def __init__(self, name, reader, classes, description, splits: bool = False):
        self.name, self._reader, self._classes, self.description = name, reader, classes, description
        self.defaults = {
            "positive_class": "covid" if "covid" in classes else classes[0],
            "skip_unreadable": False,
            "labels": list(classes),
            "binary": False,
            "root": "",
        }
        if splits:
            self.defaults["split"] = "all"

    def samples(self, options, seed, data_dir):
        options = {**self.defaults, **options}
        warnings: list[str] = []
        root = source_root(self.name, options, data_dir)
        table, notes = _read(self._reader, root, warnings)
        if "split" in self.defaults:
            split = str(options["split"]).strip().lower()
            if split not in KERMANY_SPLITS:
                raise DataError(f"{self.name}: split = {options['split']!r}; use one of {', '.join(KERMANY_SPLITS)}")
            if split != "all":
                present = sorted(set(table["split"]))
                table = table[table["split"] == split]
                if table.empty:
                    raise DataError(
                        f"{self.name}: split = {split!r}, but {root} holds no {split} images (splits "
                        f"present: {', '.join(present)}); place the {split} folder of the release there "
                        "or choose another split"
                    )
                notes.append(f"{self.name}: split {split}: {len(table)} images")
        keep = [c for c in self._classes if c in options["labels"]]
        table = table[table["label"].isin(keep)].sort_values("id").reset_index(drop=True)
        if options["skip_unreadable"]:
            table = drop_unreadable(table, notes, warnings)
        positive = options["positive_class"] if options["positive_class"] in keep else keep[0]
        if options["binary"]:  # positive class vs everything else kept (e.g. COVID-19 vs other findings)
            rest = f"not_{positive}"
            table = table.assign(finding=table["label"], label=table["label"].where(table["label"] == positive, rest))
            keep = [positive, rest]
        name = self.name + ("-binary" if options["binary"] else "")
        if "split" in self.defaults and str(options["split"]).strip().lower() != "all":
            name += f"-{str(options['split']).strip().lower()}"
        return SampleSet(
            table=table,
            classes=tuple(keep),
            positive_class=positive,
            notes=notes,
            warnings=warnings,
            load=functools.partial(load_images, skip_unreadable=bool(options["skip_unreadable"])),
            fingerprint=_fingerprint(name, table),
        )


def _fingerprint(name, table) -> str:
    return f"{name}:{len(table)}:{zlib.crc32(''.join(table['id']).encode()):08x}"


class ComposedDataset(Dataset):
    """A study data set: class -> list of (source, source label, default count)."""

    def __init__(self, name, recipe, description):
        self.name, self.recipe, self.description = name, recipe, description
        self.defaults = {
            "positive_class": "covid",
            "skip_unreadable": False,
            "root": "",
            **{key: count for parts in recipe.values() for _, _, key, count in parts},
        }

    def samples(self, options, seed, data_dir):
        options = {**self.defaults, **options}
        root = source_root(self.name, options, data_dir)
        sources, notes, warnings = {}, [], []
        needed = {src for parts in self.recipe.values() for src, _, _, _ in parts}
        problems = []
        for src, reader in (("cohen", read_cohen), ("kermany", read_kermany)):
            if src in needed:
                try:
                    table, src_notes = _read(reader, root, warnings)
                except Exception as exc:  # one message naming everything missing
                    problems.append(str(exc))
                    continue
                sources[src] = table
                notes.extend(src_notes)
        if problems:
            raise DataError(
                f"{self.name} needs data that is missing under {root}:\n" + "\n".join(f"  - {p}" for p in problems)
            )
        parts = []
        for cls, recipe in self.recipe.items():
            for src, src_label, key, _ in recipe:
                want = int(options[key])
                pool = sources[src][sources[src]["label"] == src_label].sort_values("id")
                if options["skip_unreadable"]:
                    pool = drop_unreadable(pool, notes, warnings)
                rng = np.random.default_rng([seed, zlib.crc32(f"{self.name}/{key}".encode())])
                take = pool.iloc[np.sort(rng.permutation(len(pool))[:want])]
                if len(take) < want:
                    notes.append(
                        f"shortfall: {self.name} asks for {want} {src_label} images from {src} ({key}); "
                        f"the source holds {len(pool)}, all of them are used ({want - len(pool)} short)"
                    )
                    warnings.append(notes[-1])
                parts.append(take.assign(label=cls, finding=take["label"]))
        table = pd.concat(parts, ignore_index=True)
        return SampleSet(
            table=table,
            classes=tuple(self.recipe),
            positive_class=options["positive_class"],
            load=functools.partial(load_images, skip_unreadable=bool(options["skip_unreadable"])),
            notes=notes,
            warnings=warnings,
            fingerprint=_fingerprint(self.name, table),
        )


DATASET_1 = {
    "covid": [("cohen", "covid", "covid", 224)],
    "bacterial": [("kermany", "bacterial", "bacterial", 700)],
    "normal": [("kermany", "normal", "normal", 504)],
}
DATASET_2 = {
    "covid": [("cohen", "covid", "covid", 224)],
    "pneumonia": [("kermany", "bacterial", "bacterial", 400), ("kermany", "viral", "viral", 314)],
    "normal": [("kermany", "normal", "normal", 504)],
}


@hookimpl
def benchbox_datasets():
    return [
        ComposedDataset(
            "dataset_1", DATASET_1, "the study's Dataset_1: 224 COVID-19 (Cohen), 700 bacterial, 504 normal (Kermany)"
        ),
        ComposedDataset(
            "dataset_2",
            DATASET_2,
            "the study's Dataset_2: 224 COVID-19, 714 pneumonia (400 bacterial + 314 viral), 504 normal",
        ),
        SourceDataset(
            "cohen",
            read_cohen,
            ("covid", "bacterial", "viral", "normal", "other"),
            "Cohen's covid-chestxray-dataset: frontal X-rays, all findings",
        ),
        SourceDataset(
            "kermany",
            read_kermany,
            ("bacterial", "viral", "normal"),
            "Kermany et al. pediatric chest_xray: bacterial, viral, normal",
            splits=True,
        ),
    ]


@hookimpl
def benchbox_data_sources():
    from benchbox_xray.fetch import data_sources  # imported on use: pooch is needed only to fetch or verify

    return data_sources()
