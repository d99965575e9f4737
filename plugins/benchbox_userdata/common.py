"""What the ``folder`` and ``csv`` data sets share: option checks, classes, loading, fingerprints."""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchbox.contracts import Dataset, SampleSet
from benchbox.data.images import shared_decode_cache, unreadable_reason
from benchbox.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")
#: the ``color`` option: how many channels each image is loaded with
COLORS = {"gray": 1, "rgb": 3}


def load_images(table: pd.DataFrame, size, skip_unreadable: bool = False, channels: int = 1) -> np.ndarray:
    return shared_decode_cache().load_many(
        table["path"].tolist(), tuple(size), skip_unreadable=skip_unreadable, channels=channels
    )


def loader(skip_unreadable: bool, channels: int = 1):
    """The SampleSet.load of a user data set (picklable; the error advice fits the setting):
    (N, H, W) grayscale, or (N, H, W, 3) RGB with ``channels = 3``."""
    return functools.partial(load_images, skip_unreadable=bool(skip_unreadable), channels=int(channels))


def color_problems(options: Mapping[str, Any]) -> list[str]:
    """What is wrong with the ``color`` option (for `benchbox validate`, which names the data set)."""
    color = options.get("color", "gray")
    if color in COLORS:
        return []
    hint = ' (spelled "gray")' if color == "grey" else ""
    return [
        f'color = {color!r} is not a colour mode; use "gray" (one channel, the default: colour files are '
        f'converted to grayscale) or "rgb" (three channels: grayscale files are repeated){hint}'
    ]


def channels_of(plugin: str, options: Mapping[str, Any]) -> int:
    """The channels a data set loads, from its ``color`` option (a bad value is a DataError)."""
    problems = color_problems(options)
    if problems:
        raise DataError(f"{plugin}: {problems[0]}")
    return COLORS[options.get("color", "gray")]


def colour_fingerprint(channels: int) -> str:
    """The fingerprint's suffix: none for grayscale (fingerprints as before), ``:rgb`` for colour."""
    return ":rgb" if channels == 3 else ""


def resolve_path(plugin: str, option: str, value: Any, data_dir: str | None, what: str) -> Path:
    """An option naming a file or folder: absolute, or relative to the working directory, or else
    relative to the data root (--data-dir / the suite's data_dir) when one is given."""
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{plugin}: set {option} to {what}")
    path = Path(value).expanduser()
    if path.exists():
        return path
    if data_dir and not path.is_absolute():
        beside = Path(data_dir).expanduser() / path
        if beside.exists():
            return beside
    tried = f"{path.resolve()}" + (
        f" or {Path(data_dir).expanduser() / path}" if data_dir and not path.is_absolute() else ""
    )
    raise DataError(f"{plugin}: {option} = {value!r} does not exist (looked for {tried}); set {option} to {what}")


def check_options(plugin: str, options: Mapping[str, Any]) -> None:
    """Option values the suite's type check cannot see (list and table contents)."""
    classes = options.get("classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes):
        raise DataError(f'{plugin}: classes must be a list of class names, e.g. ["covid", "normal"]; got {classes!r}')
    if len(set(classes)) != len(classes):
        raise DataError(f"{plugin}: classes lists a class twice: {classes!r}")
    label_map = options.get("label_map", {})
    if not isinstance(label_map, dict) or not all(isinstance(v, str) and v for v in label_map.values()):
        raise DataError(
            f'{plugin}: label_map must map names to class names, e.g. {{ "COVID-19" = "covid" }}; got {label_map!r}'
        )


def select_classes(
    plugin: str,
    table: pd.DataFrame,
    options: Mapping[str, Any],
    where: str,
    warnings: list[str],
    origin: dict[str, list[str]] | None = None,
) -> tuple[pd.DataFrame, tuple[str, ...], str]:
    """Apply ``classes`` (order and subset) and ``positive_class`` to a table whose ``label`` has
    been mapped already; ``origin`` says which folder names/labels made each class (for messages)."""
    present = sorted(table["label"].unique())
    wanted = list(options.get("classes") or [])
    if wanted:
        unknown = [c for c in wanted if c not in present]
        if unknown:
            mapped = {k: v for k, v in (options.get("label_map") or {}).items()}
            hint = f" (label_map: {mapped})" if mapped else " (label_map can rename them)"
            raise DataError(
                f"{plugin}: classes names {', '.join(map(repr, unknown))}, which {where} does not have; "
                f"it has: {joined(present) or 'none'}{hint}"
            )
        left_out = [c for c in present if c not in wanted]
        if left_out:
            n = int(table["label"].isin(left_out).sum())
            warnings.append(
                f"{plugin}: {n} image(s) of class(es) {joined(left_out)} left out, as classes lists "
                f"only {joined(wanted)}"
            )
        table = table[table["label"].isin(wanted)]
        classes = tuple(wanted)
    else:
        classes = tuple(present)
    if len(classes) < 2:
        raise DataError(
            f"{plugin}: {where} has {len(classes)} class(es) ({joined(classes) or 'none'}); a "
            "classifier needs at least 2: add images of another class" + (" or list more in classes" if wanted else "")
        )
    positive = options.get("positive_class") or classes[0]
    if positive not in classes:
        raise DataError(
            f"{plugin}: positive_class = {positive!r} is not a class of {where}; classes: {joined(classes)}"
        )
    order = {c: i for i, c in enumerate(classes)}
    table = table.assign(_order=table["label"].map(order)).sort_values(["_order", "id"], kind="stable")
    return table.drop(columns="_order").reset_index(drop=True), classes, positive


def compile_group_pattern(plugin: str, pattern: str) -> re.Pattern | None:
    if not pattern:
        return None
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise DataError(
            f"{plugin}: group_pattern {pattern!r} is not a valid regular expression: {exc}. "
            "Example: 'person(\\d+)_' (in TOML, single quotes keep the backslash)"
        ) from None
    if compiled.groups < 1:
        raise DataError(
            f"{plugin}: group_pattern {pattern!r} has no group; put the patient id in parentheses, e.g. 'person(\\d+)_'"
        )
    return compiled


def drop_unreadable(plugin: str, table: pd.DataFrame, warnings: list[str], notes: list[str]) -> pd.DataFrame:
    """Decode every image fully (a truncated file is caught) and drop those that fail."""
    bad = []
    for row in table.itertuples(index=False):
        reason = unreadable_reason(row.path)
        if reason is not None:
            bad.append((row.id, reason))
    if bad:
        listed = "; ".join(f"{i} ({r})" for i, r in bad[:10]) + (f"; and {len(bad) - 10} more" if len(bad) > 10 else "")
        warnings.append(f"{plugin}: skipped {len(bad)} unreadable image(s) (skip_unreadable = true): {listed}")
        notes.append(f"skipped unreadable: {joined(i for i, _ in bad)}")
        table = table[~table["id"].isin({i for i, _ in bad})].reset_index(drop=True)
    return table


def fingerprint(plugin: str, source: str, table: pd.DataFrame) -> str:
    """Names the content: ids, labels, groups and each file's size and modification time."""
    h = hashlib.sha256()
    for row in table.sort_values("id").itertuples(index=False):
        try:
            st = os.stat(row.path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h.update(f"{row.id}\t{row.label}\t{row.group}\t{stamp}\n".encode("utf-8", "surrogateescape"))
    return f"{plugin}:{source}:{len(table)}:{h.hexdigest()[:16]}"


def shown(value) -> str:
    """A name from the user's files, as an error shows it: as written, or quoted with escapes when it holds a
    line break, a tab or another unprintable character (the message stays one line)."""
    text = str(value)
    return text if text.isprintable() else repr(text)


def joined(items) -> str:
    return ", ".join(map(shown, items))


def example(items, n: int = 3) -> str:
    items = list(items)
    return joined(items[:n]) + (f" (and {len(items) - n} more)" if len(items) > n else "")


class UserDataset(Dataset):
    """What the ``folder`` and ``csv`` data sets do alike: check the ``color`` option, merge and check the
    options, and finish a sample table (unreadable images dropped, the summary note, the SampleSet)."""

    def check_options(self, options):
        return color_problems({**self.defaults, **options})

    def settings(self, options: Mapping[str, Any]) -> tuple[dict, int]:
        """The suite's options over the defaults, checked, and the channels they load."""
        options = {**self.defaults, **options}
        check_options(self.name, options)
        return options, channels_of(self.name, options)

    def finish(
        self,
        table: pd.DataFrame,
        classes: tuple[str, ...],
        positive: str,
        options: Mapping[str, Any],
        channels: int,
        where: str,
        source: str,
        warnings: list[str],
        notes: list[str],
        detail: str = "",
    ) -> SampleSet:
        """The SampleSet of ``table`` (classes chosen from ``where``, the file or folder read); with
        ``skip_unreadable`` its undecodable images are dropped first and the classes chosen again."""
        plugin = self.name
        if options["skip_unreadable"]:
            table = drop_unreadable(plugin, table, warnings, notes)
            table, classes, positive = select_classes(
                plugin,
                table,
                {**options, "classes": list(classes)},
                f"{where} (after skipping unreadable images)",
                warnings,
            )
        notes.insert(
            0,
            f"{plugin}: {len(table)} images in {len(classes)} classes from {where}"
            + detail
            + (" (colour: RGB, grayscale files repeated to 3 channels)" if channels == 3 else ""),
        )
        return SampleSet(
            table=table,
            classes=classes,
            positive_class=positive,
            load=loader(options["skip_unreadable"], channels),
            notes=notes,
            warnings=warnings,
            fingerprint=fingerprint(plugin, source, table) + colour_fingerprint(channels),
            channels=channels,
        )
