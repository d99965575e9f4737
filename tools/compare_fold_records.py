"""Compare the fold records of two run directories bit for bit, timing fields left out.

Why: a refactor of an engine must not change a single prediction. Run the same suite before and
after (same machine, same --threads), then::

    python tools/compare_fold_records.py /tmp/engine-before /tmp/engine-after

Every field of every ``folds/*.json`` is compared exactly (probabilities as the floats JSON stored),
except those that measure time (``*seconds``, ``*per_sec``, ``written_at``); every array of every
``*/*.npz`` (what a fold inspector keeps beside the records, e.g. the Grad-CAM maps in explanations/) is
compared exactly too. Exit 0 when identical, 1 otherwise.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

TIMING = re.compile(r"(seconds|per_sec|written_at)$")


def _flatten(value, path: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for key, inner in value.items():
            out.update(_flatten(inner, f"{path}.{key}" if path else key))
        return out
    return {path: value}


def record_differences(before: Path, after: Path) -> list[str]:
    """The fields that differ between two fold records (timings ignored)."""
    a = {k: v for k, v in _flatten(json.loads(before.read_text())).items() if not TIMING.search(k)}
    b = {k: v for k, v in _flatten(json.loads(after.read_text())).items() if not TIMING.search(k)}
    return [
        f"{before.name}: {key}" for key in sorted(set(a) | set(b)) if a.get(key, "<missing>") != b.get(key, "<missing>")
    ]


def array_differences(before: Path, after: Path) -> list[str]:
    """The arrays that differ between two .npz files, to the bit."""
    with np.load(before) as a, np.load(after) as b:
        names = sorted(set(a.files) | set(b.files))
        return [
            f"{before.name}: {name}"
            for name in names
            if name not in a.files
            or name not in b.files
            or a[name].tobytes() != b[name].tobytes()
            or a[name].shape != b[name].shape
            or a[name].dtype != b[name].dtype
        ]


def compare(before: Path, after: Path) -> tuple[int, list[str]]:
    """(files compared, differences) over folds/*.json and every folder's *.npz (fold inspectors' arrays)."""
    problems, count = [], 0
    for pattern, differ in (("folds/*.json", record_differences), ("*/*.npz", array_differences)):
        names_a = {p.relative_to(before).as_posix() for p in before.glob(pattern)}
        names_b = {p.relative_to(after).as_posix() for p in after.glob(pattern)}
        problems += [f"only in {before}: {n}" for n in sorted(names_a - names_b)]
        problems += [f"only in {after}: {n}" for n in sorted(names_b - names_a)]
        for name in sorted(names_a & names_b):
            problems += differ(before / name, after / name)
            count += 1
    return count, problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    count, problems = compare(Path(argv[0]), Path(argv[1]))
    for line in problems:
        print("differs:", line)
    if count == 0:
        print("no fold records found")
        return 1
    print(
        f"{count} files compared: "
        + ("identical (timings ignored)" if not problems else f"{len(problems)} differences")
    )
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
