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
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
from PIL import Image

from benchbox import hookimpl
from benchbox.contracts import Dataset, SampleSet
from benchbox.datadir import cache_root, data_root
from benchbox.images import DecodeCache
from benchbox_xray.sources import read_cohen, read_kermany

_CACHE: DecodeCache | None = None


def decode_cache() -> DecodeCache:
    """One decode cache per process (memory), backed by files under the benchbox cache (disk)."""
    global _CACHE
    if _CACHE is None:
        _CACHE = DecodeCache(cache_root() / "decoded")
    return _CACHE


def load_images(table: pd.DataFrame, size) -> np.ndarray:
    return decode_cache().load_many(table["path"].tolist(), tuple(size))


def drop_unreadable(table: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    bad = []
    for path in table["path"]:
        try:
            with Image.open(path) as im:
                im.verify()
        except Exception:
            bad.append(path)
    if bad:
        notes.append(f"skipped {len(bad)} unreadable image(s): {', '.join(bad)}")
    return table[~table["path"].isin(bad)].reset_index(drop=True)


class SourceDataset(Dataset):
    """All images of one source, with their fine-grained labels."""

    def __init__(self, name, reader, classes, description):
        self.name, self._reader, self._classes, self.description = name, reader, classes, description
        self.defaults = {"positive_class": "covid" if "covid" in classes else classes[0],
                         "skip_unreadable": False, "labels": list(classes), "binary": False}

    def samples(self, options, seed, data_dir):
        table, notes = self._reader(data_root(data_dir))
        keep = [c for c in self._classes if c in options["labels"]]
        table = table[table["label"].isin(keep)].sort_values("id").reset_index(drop=True)
        if options["skip_unreadable"]:
            table = drop_unreadable(table, notes)
        positive = options["positive_class"] if options["positive_class"] in keep else keep[0]
        if options["binary"]:  # positive class vs everything else kept (e.g. COVID-19 vs other findings)
            rest = f"not_{positive}"
            table = table.assign(finding=table["label"], label=table["label"].where(table["label"] == positive, rest))
            keep = [positive, rest]
        return SampleSet(table=table, classes=tuple(keep), positive_class=positive, load=load_images, notes=notes,
                         fingerprint=_fingerprint(self.name + ("-binary" if options["binary"] else ""), table))


def _fingerprint(name, table) -> str:
    return f"{name}:{len(table)}:{zlib.crc32(''.join(table['id']).encode()):08x}"


class ComposedDataset(Dataset):
    """A study data set: class -> list of (source, source label, default count)."""

    def __init__(self, name, recipe, description):
        self.name, self.recipe, self.description = name, recipe, description
        self.defaults = {"positive_class": "covid", "skip_unreadable": False,
                         **{key: count for parts in recipe.values() for _, _, key, count in parts}}

    def samples(self, options, seed, data_dir):
        root = data_root(data_dir)
        sources, notes = {}, []
        needed = {src for parts in self.recipe.values() for src, _, _, _ in parts}
        problems = []
        for src, reader in (("cohen", read_cohen), ("kermany", read_kermany)):
            if src in needed:
                try:
                    table, src_notes = reader(root)
                except Exception as exc:  # one message naming everything missing
                    problems.append(str(exc))
                    continue
                sources[src] = table
                notes.extend(src_notes)
        if problems:
            from benchbox.errors import DataError

            raise DataError(f"{self.name} needs data that is missing under {root}:\n" +
                            "\n".join(f"  - {p}" for p in problems))
        parts = []
        for cls, recipe in self.recipe.items():
            for src, src_label, key, _ in recipe:
                want = int(options[key])
                pool = sources[src][sources[src]["label"] == src_label].sort_values("id")
                if options["skip_unreadable"]:
                    pool = drop_unreadable(pool, notes)
                rng = np.random.default_rng([seed, zlib.crc32(f"{self.name}/{key}".encode())])
                take = pool.iloc[np.sort(rng.permutation(len(pool))[:want])]
                if len(take) < want:
                    notes.append(f"shortfall: {self.name} asks for {want} {src_label} images from {src} ({key}); "
                                 f"the source holds {len(pool)}, all of them are used ({want - len(pool)} short)")
                parts.append(take.assign(label=cls, finding=take["label"]))
        table = pd.concat(parts, ignore_index=True)
        return SampleSet(table=table, classes=tuple(self.recipe), positive_class=options["positive_class"],
                         load=load_images, notes=notes, fingerprint=_fingerprint(self.name, table))


DATASET_1 = {"covid": [("cohen", "covid", "covid", 224)],
             "bacterial": [("kermany", "bacterial", "bacterial", 700)],
             "normal": [("kermany", "normal", "normal", 504)]}
DATASET_2 = {"covid": [("cohen", "covid", "covid", 224)],
             "pneumonia": [("kermany", "bacterial", "bacterial", 400), ("kermany", "viral", "viral", 314)],
             "normal": [("kermany", "normal", "normal", 504)]}


@hookimpl
def benchbox_datasets():
    return [
        ComposedDataset("dataset_1", DATASET_1, "the study's Dataset_1: 224 COVID-19 (Cohen), 700 bacterial, 504 normal (Kermany)"),
        ComposedDataset("dataset_2", DATASET_2, "the study's Dataset_2: 224 COVID-19, 714 pneumonia (400 bacterial + 314 viral), 504 normal"),
        SourceDataset("cohen", read_cohen, ("covid", "bacterial", "viral", "normal", "other"),
                      "Cohen's covid-chestxray-dataset: frontal X-rays, all findings"),
        SourceDataset("kermany", read_kermany, ("bacterial", "viral", "normal"),
                      "Kermany et al. pediatric chest_xray: bacterial, viral, normal"),
    ]


@hookimpl
def benchbox_data_sources():
    from benchbox_xray.fetch import data_sources  # imported on use: pooch is needed only to fetch or verify

    return data_sources()
