"""The ``freeze`` option, one meaning in every engine: which leading layers of a network stay fixed.

Values a suite may give:
- ``"none"``: train everything; ``"all"``: train only the head on top of the network;
- a fraction in (0, 1), e.g. ``0.5``: freeze the first half of the network's *units* (the weight-
  carrying layers in Keras, the weight-carrying modules in PyTorch, counted from the input);
- a name, e.g. ``"layer3"``, ``"stages.2"``, ``"block5_pool"``: freeze every unit up to and
  including that layer/module (a module's name covers all units inside it).

An engine lists its units in order (names as the framework prints them) and asks
``frozen_count`` how many to freeze. Framework-free, so both engines and `validate` share it.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass

from benchbox.errors import BenchboxError

WORDS = ("none", "all")


@dataclass(frozen=True)
class Freeze:
    kind: str  # "none" | "all" | "fraction" | "layer"
    fraction: float = 0.0
    layer: str = ""

    def __str__(self) -> str:
        if self.kind == "fraction":
            return f"{self.fraction:g} of the units"
        return f"up to {self.layer!r}" if self.kind == "layer" else self.kind


def freeze_problem(value) -> str | None:
    """Why ``value`` cannot be a freeze setting (no network needed), or None."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return f'freeze: must be "none", "all", a fraction in (0, 1) or a layer name, got {value!r}'
    if isinstance(value, (int, float)):
        if value in (0, 1):
            return None
        if not (0 < value < 1) or math.isnan(value):
            return f'freeze: a fraction must lie between 0 and 1 (use "none" or "all" for the ends), got {value!r}'
        return None
    if not value.strip():
        return 'freeze: empty; use "none", "all", a fraction such as 0.5, or a layer name'
    return None


def parse_freeze(value) -> Freeze:
    problem = freeze_problem(value)
    if problem:
        raise BenchboxError(problem)
    if isinstance(value, (int, float)):
        return Freeze("none") if value == 0 else Freeze("all") if value == 1 else Freeze("fraction", float(value))
    word = value.strip()
    if word.lower() in WORDS:
        return Freeze(word.lower())
    return Freeze("layer", layer=word)


def frozen_count(spec: Freeze, units: Sequence[str], network: str = "") -> int:
    """How many leading ``units`` (weight-carrying layer/module names, input first) to freeze.

    A layer name matches a unit exactly or as a parent module (``"layer3"`` covers
    ``"layer3.0.conv1"``); the last unit it covers is the last frozen. An unknown name is an error
    that lists the closest names."""
    if spec.kind == "none":
        return 0
    if spec.kind == "all":
        return len(units)
    if spec.kind == "fraction":
        return int(round(spec.fraction * len(units)))
    covered = [i for i, u in enumerate(units) if u == spec.layer or u.startswith(spec.layer + ".")]
    if covered:
        return covered[-1] + 1
    parents = sorted({p for u in units for p in _parents(u)})
    close = difflib.get_close_matches(spec.layer, parents, n=5, cutoff=0.5)
    where = f"{network}: " if network else ""
    raise BenchboxError(
        f"{where}freeze: no layer or module named {spec.layer!r}"
        + (f"; did you mean {', '.join(close)}?" if close else "")
        + " (or a fraction such as 0.5; `benchbox backbones describe NAME --freeze LAYER` shows what a setting freezes)"
    )


def _parents(unit: str) -> list[str]:
    parts = unit.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def module_names(units: Sequence[str], depth: int = 2) -> list[str]:
    """The distinct module names up to ``depth`` dots deep, in order: what a user may name in
    ``freeze`` (e.g. ``layer1 .. layer4`` or ``stages.0 .. stages.3``)."""
    seen: dict[str, None] = {}
    for unit in units:
        for name in _parents(unit)[:depth]:
            seen.setdefault(name, None)
    return list(seen)
