"""Facts about a network that only building it tells — its feature maps and their sizes, the input layout a
timm model takes, the modules a freeze setting counts — kept in the user cache (``$BENCHBOX_CACHE/networks/``),
so `benchbox validate` and every `run` build a network for its checks once per machine and framework
versions, not once per command (20 timm encoders: about 10 s of each warm encoder-zoo run).

A fact is keyed by a kind, what it is about (any JSON value) and the installed versions of the frameworks
that decide it, benchbox's own included. A missing, unreadable or foreign file is a miss; a cache that cannot
be written costs the next command a build, never the command itself. Only facts are kept: a refusal (an
input size the network cannot take) is computed again each time, so its message is always the current one.
``benchbox cache clear --networks`` forgets them all.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: the distributions whose versions decide what a network's layers are called and what it accepts
FRAMEWORKS = ("keras", "tensorflow", "jax", "torch", "torchvision", "timm", "torchxrayvision", "benchbox")
FOLDER = "networks"


@functools.cache
def framework_versions() -> dict[str, str]:
    from benchbox.execute.environment import package_versions

    return package_versions(FRAMEWORKS)


def folder() -> Path:
    from benchbox.data.datadir import cache_root

    return cache_root() / FOLDER


def path(kind: str, about: Any) -> Path:
    what = {"kind": kind, "about": about, "versions": framework_versions()}
    digest = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return folder() / f"{kind}-{digest}.json"


def recall(kind: str, about: Any) -> Any | None:
    """The value kept for (kind, about) under these framework versions, or None."""
    try:
        data = json.loads(path(kind, about).read_text(encoding="utf-8"))
        return data["value"] if data.get("kind") == kind else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def keep(kind: str, about: Any, value: Any) -> None:
    """Write the fact atomically (a reader never sees half of it); a read-only cache is passed over."""
    from benchbox.execute.store import write_atomic

    try:
        target = path(kind, about)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, json.dumps({"kind": kind, "about": about, "value": value}, default=str))
    except OSError:
        pass


def remembered(kind: str, about: Any, compute: Callable[[], Any], decode: Callable[[Any], Any] = lambda v: v) -> Any:
    """``decode`` of the kept value, else ``compute()`` (kept as JSON for the next command). ``decode`` turns
    the JSON back into what ``compute`` returns (tuples come back as lists); a value it cannot decode is a
    miss."""
    value = recall(kind, about)
    if value is not None:
        try:
            return decode(value)
        except (TypeError, ValueError, KeyError, IndexError):
            pass
    result = compute()
    keep(kind, about, result)
    return result


def kept() -> list[tuple[Path, int]]:
    """(file, bytes) of every kept fact."""
    found = []
    root = folder()
    if root.is_dir():
        for file in root.glob("*.json"):
            try:
                found.append((file, file.stat().st_size))
            except OSError:  # removed meanwhile
                continue
    return found


def forget() -> tuple[int, int]:
    """Remove every kept fact: (files, bytes)."""
    removed = freed = 0
    for file, size in kept():
        try:
            file.unlink()
        except OSError:
            continue
        removed, freed = removed + 1, freed + size
    return removed, freed
