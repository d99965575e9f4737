"""Write any data set as a class-folder tree plus a CSV that the ``folder`` and ``csv`` data sets read.

Framework- and plugin-free: it takes a :class:`benchbox.contracts.SampleSet` (from any Dataset
plugin) and writes::

    DIR/<class>/<patient>__<id>.png     one 8-bit grayscale PNG per sample (samples.load at ``size``)
    DIR/labels.csv                      path (relative to the CSV), label, patient, source

The patient id leads the file name, so ``group_pattern = '^[^/]+/(.+)__'`` gives the patients back
to the ``folder`` data set (a sample whose patient is the sample itself is written as ``<id>.png``).

It backs ``benchbox data export DATASET --to DIR [--size HxW]`` (e.g. ``benchbox data export
synthetic --to exported-synthetic``); the CLI command is wired in benchbox/cli/data.py by calling
:func:`export_dataset` with the plugin's ``samples(defaults + options, seed, data_dir)``.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from benchbox.contracts import SampleSet
from benchbox.errors import DataError

#: separates the patient id from the sample id in an exported file name
GROUP_SEPARATOR = "__"
#: the folder data set's group_pattern that reads the patient back from an export
GROUP_PATTERN = r"^[^/]+/(.+)__"
CHUNK = 256  # images loaded at a time: memory stays bounded (256 x 512 x 512 bytes = 64 MiB)


def parse_options(registry, plugin: str, pairs: list[str]) -> dict:
    """``--option KEY=VALUE`` pairs (VALUE read as TOML: ``3``, ``true``, ``"text"``, ``[1, 2]``,
    ``{a = 10, b = 20}``; a value that is not TOML is taken as text) checked against the data set
    plugin's options as a suite's [datasets.NAME] table is: the options, defaults merged."""
    from benchbox.define.suite import dataset_options, tomllib
    from benchbox.errors import BenchboxError

    table, problems = {}, []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"--option {pair!r}: write KEY=VALUE, e.g. --option lesion_contrast=3")
            continue
        try:
            table[key] = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            table[key] = value.strip()
    options, more = dataset_options(registry, plugin, table)
    problems += [f"--option {p}" for p in more]
    if problems:
        raise BenchboxError(
            f"benchbox data export {plugin}: {len(problems)} problem(s)\n" + "\n".join(f"  - {p}" for p in problems)
        )
    return options


def safe_name(text: str, limit: int = 120) -> str:
    """A file-name-safe form of ``text`` (letters, digits, '-', '_', '.'); never empty, never hidden."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-._")
    name = re.sub(r"_{2,}", "_", name) or "x"  # "__" is the separator only
    if len(name) > limit:
        name = f"{name[: limit - 9]}-{zlib.crc32(str(text).encode()):08x}"
    return name


def _check_target(to: Path) -> None:
    if to.exists() and not to.is_dir():
        raise DataError(f"export: {to} is a file; choose a new folder to export into")
    if to.is_dir() and any(to.iterdir()):
        raise DataError(f"export: {to} is not empty; choose a new or empty folder (nothing was written)")


def export_dataset(samples: SampleSet, to: str | os.PathLike, size: tuple[int, int], chunk: int = CHUNK) -> dict:
    """Write every sample of ``samples`` as ``to/<class>/<name>.png`` and ``to/labels.csv``.

    Images come from ``samples.load`` at ``size`` (height, width), ``chunk`` at a time. Refuses a
    non-empty target (DataError) and writes into a hidden sibling folder that is renamed into place
    at the end, so an interrupted export leaves no half-written target. Returns a summary: folder,
    csv, images, classes (class -> count), size, group_pattern."""
    to = Path(to).expanduser()
    height, width = (int(v) for v in size)
    if height < 1 or width < 1:
        raise DataError(f"export: size must be positive (height, width); got {tuple(size)}")
    _check_target(to)
    parent = to.parent.resolve()
    parent.mkdir(parents=True, exist_ok=True)
    table = samples.table.reset_index(drop=True)
    class_dirs = {c: safe_name(c) for c in samples.classes}
    if len(set(class_dirs.values())) != len(class_dirs):
        raise DataError(
            f"export: class names {list(samples.classes)} give the same folder name once made safe; "
            "rename the classes (e.g. with label_map)"
        )
    names, used = [], set()
    for row in table.itertuples(index=False):
        stem = (
            safe_name(row.id)
            if str(row.group) == str(row.id)
            else f"{safe_name(row.group)}{GROUP_SEPARATOR}{safe_name(row.id)}"
        )
        rel = f"{class_dirs[row.label]}/{stem}.png"
        if rel in used:  # two ids that differ only in unsafe characters
            rel = f"{class_dirs[row.label]}/{stem}-{zlib.crc32(str(row.id).encode()):08x}.png"
        used.add(rel)
        names.append(rel)
    staging = parent / f".{to.name}.exporting-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for d in class_dirs.values():
            (staging / d).mkdir(parents=True)
        for start in range(0, len(table), chunk):
            part = table.iloc[start : start + chunk]
            images = np.asarray(samples.load(part, (height, width)))
            expected = (len(part), height, width) + ((3,) if samples.channels == 3 else ())
            if images.shape != expected or images.dtype != np.uint8:
                raise DataError(
                    f"export: the data set's load returned {images.dtype} {images.shape}; expected uint8 {expected}"
                )
            for rel, image in zip(names[start : start + chunk], images):
                Image.fromarray(image, "RGB" if samples.channels == 3 else "L").save(staging / rel)
        with open(staging / "labels.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label", "patient", "source"])
            for rel, row in zip(names, table.itertuples(index=False)):
                writer.writerow([rel, row.label, row.group, row.source])
        _check_target(to)  # still free?
        if to.is_dir():
            to.rmdir()  # empty: os.replace needs the name free
        os.replace(staging, to)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    counts = table["label"].value_counts()
    return {
        "folder": str(to),
        "csv": str(to / "labels.csv"),
        "images": len(table),
        "classes": {c: int(counts.get(c, 0)) for c in samples.classes},
        "size": [height, width],
        "group_pattern": GROUP_PATTERN,
    }
