"""Where raw data and caches live: --data-dir, else $BENCHBOX_DATA, else the user cache."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """The folder that holds the raw data sources; a DataError when the one given is a file."""
    if explicit:
        root, given = Path(explicit).expanduser(), "--data-dir"
    elif os.environ.get("BENCHBOX_DATA"):
        root, given = Path(os.environ["BENCHBOX_DATA"]).expanduser(), "BENCHBOX_DATA"
    else:
        return Path(platformdirs.user_cache_dir("benchbox")) / "data"
    if root.exists() and not root.is_dir():
        from benchbox.errors import DataError

        raise DataError(
            f"{given} {root} is a file, not a folder: it names the folder that holds the data sources "
            f"(e.g. {root.parent}, if the sources are beside that file); give that folder"
        )
    return root


def cache_root() -> Path:
    """Decoded images and other derived data ($BENCHBOX_CACHE, else the user cache)."""
    if os.environ.get("BENCHBOX_CACHE"):
        return Path(os.environ["BENCHBOX_CACHE"]).expanduser()
    return Path(platformdirs.user_cache_dir("benchbox")) / "cache"
