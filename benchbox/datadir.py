"""Where raw data and caches live: --data-dir, else $BENCHBOX_DATA, else the user cache."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("BENCHBOX_DATA"):
        return Path(os.environ["BENCHBOX_DATA"]).expanduser()
    return Path(platformdirs.user_cache_dir("benchbox")) / "data"


def cache_root() -> Path:
    """Decoded images and other derived data ($BENCHBOX_CACHE, else the user cache)."""
    if os.environ.get("BENCHBOX_CACHE"):
        return Path(os.environ["BENCHBOX_CACHE"]).expanduser()
    return Path(platformdirs.user_cache_dir("benchbox")) / "cache"
