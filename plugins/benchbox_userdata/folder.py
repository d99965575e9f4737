"""``folder``: one sub-folder per class, as torchvision's ImageFolder and Hugging Face's imagefolder."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from benchbox.data.images import has_dicom_preamble
from benchbox.errors import DataError
from benchbox_userdata.common import (
    IMAGE_SUFFIXES,
    UserDataset,
    compile_group_pattern,
    example,
    joined,
    resolve_path,
    select_classes,
)

SPLIT_NAMES = {"train", "test", "val", "valid", "validation"}
NO_GROUP_WARNING = (
    "{plugin}: no group_pattern, so each image is its own group: images of one patient can fall in "
    "both the training and the test folds, which inflates the scores. If file names carry a patient id, "
    "set group_pattern (e.g. 'person(\\d+)_')"
)


def _hidden(name: str) -> bool:
    return name.startswith(".") or name in ("__MACOSX", "@eaDir")


def _sniff_candidate(path: Path) -> bool:
    """Files worth checking for the DICM preamble: DICOM exports often have no extension, a UID
    whose last part is numeric, or .ima/.dc3/.dic."""
    suffix = path.suffix.lower()
    return suffix in ("", ".ima", ".dc3", ".dic") or suffix[1:].isdigit()


def is_image_file(path: Path) -> bool:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    return _sniff_candidate(path) and has_dicom_preamble(path)


def scan(root: Path) -> tuple[dict[str, list[Path]], list[Path], list[str]]:
    """{class folder name: image paths (recursive, sorted)}, images directly in root, and the
    relative paths of other files (ignored)."""
    folders: dict[str, list[Path]] = {}
    loose, ignored = [], []
    for entry in sorted(root.iterdir()):
        if _hidden(entry.name):
            continue
        if entry.is_dir():
            files = []
            for dirpath, dirnames, filenames in os.walk(entry):
                dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
                for name in sorted(filenames):
                    if _hidden(name):
                        continue
                    path = Path(dirpath) / name
                    if is_image_file(path):
                        files.append(path)
                    else:
                        ignored.append(path.relative_to(root).as_posix())
            folders[entry.name] = files
        elif entry.is_file():
            if is_image_file(entry):
                loose.append(entry)
            else:
                ignored.append(entry.name)
    return folders, loose, ignored


class FolderDataset(UserDataset):
    name = "folder"
    description = (
        "images in one sub-folder per class (png, jpg, bmp, tiff, DICOM), recursive; patients from group_pattern"
    )
    defaults = {
        "root": "",
        "classes": [],
        "label_map": {},
        "positive_class": "",
        "group_pattern": "",
        "source": "",
        "skip_unreadable": False,
        "color": "gray",
        "allow_empty": False,
    }

    def samples(self, options, seed, data_dir):
        plugin = self.name
        options, channels = self.settings(options)
        root = resolve_path(
            plugin,
            "root",
            options["root"],
            data_dir,
            "a folder holding one sub-folder of images per class (root/covid/*.png, root/normal/*.png)",
        )
        if not root.is_dir():
            raise DataError(
                f"{plugin}: root = {str(root)!r} is a file, not a folder; set root to the folder holding "
                "one sub-folder per class"
            )
        pattern = compile_group_pattern(plugin, options["group_pattern"])
        folders, loose, ignored = scan(root)
        warnings, notes = [], []
        n_images = sum(map(len, folders.values()))
        if n_images == 0:
            if loose:
                raise DataError(
                    f"{plugin}: the images in {root} lie directly in it ({example(p.name for p in loose)}); "
                    "put them in one sub-folder per class: root/<class>/<image>"
                )
            raise DataError(
                f"{plugin}: no images under {root} (looked for {', '.join(IMAGE_SUFFIXES)} and DICOM files "
                f"in its sub-folders); expected root/<class>/<image>, e.g. root/covid/a.png"
                + (f"; found only {example(ignored)}" if ignored else "")
            )
        wanted = list(options["classes"])
        names = [n.lower() for n in folders]
        if (
            names
            and set(names) <= SPLIT_NAMES
            and not wanted
            and any(p.parent != root / folder for folder, ps in folders.items() for p in ps)
        ):
            raise DataError(
                f"{plugin}: {root} holds split folders ({joined(folders)}) rather than class folders; "
                f"set root to one split, e.g. root = {str(root / next(iter(folders)))!r}, and add the other "
                "as a second data set"
            )
        label_map = dict(options["label_map"])
        unused = [k for k in label_map if k not in folders]
        if unused:
            warnings.append(
                f"{plugin}: label_map names {', '.join(map(repr, unused))}, which is not a folder in {root} "
                f"(folders: {joined(folders)})"
            )
        if loose:
            warnings.append(
                f"{plugin}: {len(loose)} image(s) directly in {root} belong to no class folder and were "
                f"left out (e.g. {example(p.name for p in loose)})"
            )
        if ignored:
            notes.append(f"{plugin}: ignored {len(ignored)} file(s) that are not images: {example(ignored)}")
        by_class: dict[str, list[str]] = {}
        for folder in folders:
            by_class.setdefault(label_map.get(folder, folder), []).append(folder)
        for cls, members in by_class.items():
            empty = [f for f in members if not folders[f]]
            if not empty:
                continue
            if cls in wanted and len(empty) == len(members):
                raise DataError(
                    f"{plugin}: class folder {str(root / empty[0])!r} is empty, and classes names "
                    f"{cls!r}: put its images there, or drop {cls!r} from classes"
                )
            if not options["allow_empty"]:  # torchvision's ImageFolder refuses them too, unless allow_empty
                raise DataError(
                    f"{plugin}: class folder(s) {', '.join(repr(str(root / f)) for f in empty)} hold no images; "
                    "put the images there, remove the folder(s), or set allow_empty = true on the data set to "
                    "leave empty folders out"
                )
            warnings.append(
                f"{plugin}: class folder(s) {', '.join(str(root / f) for f in empty)} hold no images"
                + (" and were left out (allow_empty = true)" if len(empty) == len(members) else "")
            )
        source = options["source"] or root.resolve().name
        rows = []
        for folder, files in folders.items():
            for path in files:
                rel = path.relative_to(root).as_posix()
                rows.append(
                    {
                        "id": rel,
                        "label": label_map.get(folder, folder),
                        "group": rel,
                        "source": source,
                        "path": str(path),
                        "folder": folder,
                    }
                )
        table = pd.DataFrame(rows)
        table, classes, positive = select_classes(plugin, table, options, str(root), warnings)
        table = self._groups(plugin, table, pattern, options["group_pattern"], warnings)
        return self.finish(table, classes, positive, options, channels, str(root), source, warnings, notes)

    @staticmethod
    def _groups(plugin, table, pattern: re.Pattern | None, text: str, warnings) -> pd.DataFrame:
        if pattern is None:
            warnings.append(NO_GROUP_WARNING.format(plugin=plugin))
            return table
        groups = []
        for rel in table["id"]:
            m = pattern.search(rel)
            groups.append(m.group(1) if m and m.group(1) else None)
        unmatched = [rel for rel, g in zip(table["id"], groups) if g is None]
        if len(unmatched) == len(table):
            raise DataError(
                f"{plugin}: group_pattern {text!r} matches no image path; it is searched in the path "
                f"relative to root, e.g. {unmatched[0]!r}. Fix the pattern so that its first group "
                "captures the patient id"
            )
        if unmatched:
            warnings.append(
                f"{plugin}: group_pattern {text!r} does not match {len(unmatched)} of {len(table)} image "
                f"path(s) (e.g. {example(unmatched)}); each of those is its own group"
            )
        table = table.assign(group=[g if g is not None else rel for g, rel in zip(groups, table["id"])])
        if len(table) > 1 and table["group"].nunique() == len(table):
            warnings.append(
                f"{plugin}: group_pattern {text!r} gives every image a patient of its own "
                f"(e.g. {table['group'].iloc[0]!r}); check that its group captures the patient id only"
            )
        return table
