"""``csv``: a table of image paths and labels (and optionally patient, source, split)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pandas as pd

from benchbox.errors import DataError, did_you_mean
from benchbox_userdata.common import (
    UserDataset,
    example,
    joined,
    resolve_path,
    select_classes,
)

#: logical column -> the names looked for when ``columns`` does not name one (case-insensitive)
COLUMNS = {
    "path": ("path",),
    "label": ("label",),
    "group": ("patient", "group", "patient_id", "patientid"),
    "source": ("source",),
    "split": ("split",),
}
ALIASES = {"patient": "group"}


def read_utf8_csv(path: Path, plugin: str) -> pd.DataFrame:
    """A CSV as strings. Non-UTF-8 bytes are an error naming the lines, never replaced: a label, a
    patient id or a path that changes silently is worse than a stop (the fix is one re-save)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        bad = []
        for number, line in enumerate(data.split(b"\n"), 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                bad.append(number)
        raise DataError(
            f"{plugin}: {path} is not UTF-8: line(s) {example(bad, 5)} hold bytes that are not UTF-8 "
            "text. Save the file as UTF-8 (e.g. `iconv -f cp1252 -t utf-8 in.csv > out.csv`, or "
            "'CSV UTF-8' in a spreadsheet) and point file at it"
        ) from None
    try:
        table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError(
            f"{plugin}: {path} is empty; it needs a header line (path,label,...) and one row per image"
        ) from None
    except pd.errors.ParserError as exc:
        # pandas ends some of its messages with a line break: the error stays one line
        raise DataError(f"{plugin}: {path} is not a well-formed CSV: {' '.join(str(exc).split())}") from None
    table.columns = [str(c).strip() for c in table.columns]
    return table


def _find_columns(plugin: str, path: Path, table: pd.DataFrame, mapping: dict) -> dict[str, str]:
    unknown = [k for k in mapping if k not in COLUMNS and k not in ALIASES]
    if unknown:
        hint = "".join(did_you_mean(k, [*COLUMNS, *ALIASES]) for k in unknown)
        raise DataError(
            f"{plugin}: columns has unknown key(s) {', '.join(map(repr, unknown))}{hint}; allowed: path, label, "
            'patient (or group), source, split, e.g. columns = { path = "filename", label = "finding" }'
        )
    bad = {k: v for k, v in mapping.items() if not isinstance(v, str) or not v}
    if bad:
        raise DataError(f"{plugin}: columns values must be column names (strings); got {bad}")
    mapping = {ALIASES.get(k, k): v for k, v in mapping.items()}
    by_lower = {c.lower(): c for c in table.columns}
    found = {}
    for key, candidates in COLUMNS.items():
        if key in mapping:
            name = mapping[key]
            actual = name if name in table.columns else by_lower.get(name.lower())
            if actual is None:
                raise DataError(
                    f"{plugin}: {path} has no column {name!r} (named by columns.{key}){did_you_mean(name, table.columns)}; "
                    f"its columns are: {joined(table.columns)}"
                )
            found[key] = actual
            continue
        for name in candidates:
            if name in by_lower:
                found[key] = by_lower[name]
                break
    for key in ("path", "label"):
        if key not in found:
            raise DataError(
                f"{plugin}: {path} has no {key!r} column; its columns are: {joined(table.columns)}. "
                f"Name the {key} column with the columns option, e.g. columns = {{ {key} = "
                f'"{"filename" if key == "path" else "finding"}" }}'
            )
    return found


class CsvDataset(UserDataset):
    name = "csv"
    description = "a CSV of image paths and labels (optional patient, source, split columns); paths relative to the CSV"
    defaults = {
        "file": "",
        "columns": {},
        "split": "all",
        "classes": [],
        "label_map": {},
        "positive_class": "",
        "source": "",
        "skip_unreadable": False,
        "color": "gray",
    }

    def samples(self, options, seed, data_dir):
        plugin = self.name
        options, channels = self.settings(options)
        if not isinstance(options["columns"], dict):
            raise DataError(f'{plugin}: columns must be a table, e.g. {{ path = "filename", label = "finding" }}')
        csv = resolve_path(
            plugin,
            "file",
            options["file"],
            data_dir,
            "a CSV with columns path and label (and optionally patient, source, split)",
        )
        if not csv.is_file():
            raise DataError(f"{plugin}: file = {str(csv)!r} is not a file; set file to a CSV")
        raw = read_utf8_csv(csv, plugin)
        cols = _find_columns(plugin, csv, raw, dict(options["columns"]))
        lines = pd.Series(range(2, len(raw) + 2), index=raw.index)  # the header is line 1
        warnings, notes = [], []
        split = str(options["split"]).strip()
        if split and split != "all":
            if "split" not in cols:
                raise DataError(
                    f"{plugin}: split = {split!r}, but {csv} has no split column (columns: "
                    f'{joined(raw.columns)}); name it with columns = {{ split = "..." }} or use split = "all"'
                )
            values = raw[cols["split"]].str.strip()
            if not (values == split).any():
                raise DataError(
                    f"{plugin}: split = {split!r} matches no row of {csv}; its {cols['split']!r} column holds: "
                    f"{example(sorted(set(values)), 8)}"
                )
            raw, lines = raw[values == split], lines[values == split]
        paths = raw[cols["path"]].str.strip()
        labels = raw[cols["label"]].str.strip()
        for what, series in (("path", paths), ("label", labels)):
            empty = lines[series == ""]
            if len(empty):
                raise DataError(
                    f"{plugin}: {csv}: line(s) {example(empty.tolist(), 5)} have an empty {what} "
                    f"(column {cols[what]!r}); fill them in or delete those rows"
                )
        if not len(raw):
            raise DataError(f"{plugin}: {csv} has no rows; it needs one row per image")
        base = csv.parent
        ids, files = [], []
        for value in paths:
            value = value.replace("\\", "/") if os.sep == "/" else value
            p = Path(value).expanduser()
            full = Path(os.path.normpath(p if p.is_absolute() else base / p))
            ids.append(p.as_posix() if p.is_absolute() else Path(os.path.normpath(value)).as_posix())
            files.append(full)
        exists = [f.is_file() for f in files]
        missing = [(line, value, f) for line, value, f, ok in zip(lines, paths, files, exists) if not ok]
        if missing:
            listed = "; ".join(f"line {line}: {value!r} ({f})" for line, value, f in missing[:5])
            more = f"; and {len(missing) - 5} more" if len(missing) > 5 else ""
            if not options["skip_unreadable"]:
                raise DataError(
                    f"{plugin}: {len(missing)} path(s) in {csv} do not exist: {listed}{more}. Paths are read "
                    "relative to the CSV's folder; fix them, or set skip_unreadable = true to leave such "
                    "rows out"
                )
            warnings.append(
                f"{plugin}: skipped {len(missing)} row(s) of {csv} whose file does not exist "
                f"(skip_unreadable = true): {listed}{more}"
            )
        source_default = options["source"] or base.resolve().name
        sources = raw[cols["source"]].str.strip() if "source" in cols else pd.Series("", index=raw.index)
        table = pd.DataFrame(
            {
                "id": ids,
                "label": [options["label_map"].get(v, v) for v in labels],
                "group": raw[cols["group"]].str.strip().to_numpy() if "group" in cols else ids,
                "source": [s or source_default for s in sources],
                "path": [str(f) for f in files],
                "finding": labels.to_numpy(),
                "line": lines.to_numpy(),
            }
        )
        if "split" in cols:
            table["split"] = raw[cols["split"]].str.strip().to_numpy()
        table = table[exists].reset_index(drop=True)
        table = self._dedupe(plugin, csv, table, warnings)
        if "group" not in cols:
            warnings.append(
                f"{plugin}: {csv} has no patient column, so each image is its own group: images of one "
                "patient can fall in both the training and the test folds, which inflates the scores. Add a "
                'patient column (or name it with columns = { patient = "..." })'
            )
        else:
            blank = table["group"] == ""
            if blank.any():
                warnings.append(
                    f"{plugin}: {int(blank.sum())} row(s) of {csv} have no patient (line(s) "
                    f"{example(table.loc[blank, 'line'].tolist(), 5)}); each of those is its own group"
                )
                table.loc[blank, "group"] = table.loc[blank, "id"]
        table, classes, positive = select_classes(plugin, table, options, str(csv), warnings)
        detail = f" (split {split})" if split and split != "all" else ""
        return self.finish(
            table, classes, positive, options, channels, str(csv), source_default, warnings, notes, detail
        )

    @staticmethod
    def _dedupe(plugin, csv, table, warnings) -> pd.DataFrame:
        dup = table[table.duplicated("path", keep=False)]
        if dup.empty:
            return table
        conflicts = [g for _, g in dup.groupby("path") if g["label"].nunique() > 1]
        if conflicts:
            g = conflicts[0]
            raise DataError(
                f"{plugin}: {csv} gives {g['id'].iloc[0]!r} different labels on lines "
                f"{', '.join(map(str, g['line']))} ({joined(g['finding'])})"
                + (f", and {len(conflicts) - 1} more file(s) conflict" if len(conflicts) > 1 else "")
                + ": keep one row per image"
            )
        extra = table.duplicated("path", keep="first")
        warnings.append(
            f"{plugin}: {int(extra.sum())} duplicate row(s) in {csv} (same file, same label) were dropped, "
            f"lines {example(table.loc[extra, 'line'].tolist(), 5)}"
        )
        return table[~extra].reset_index(drop=True)
