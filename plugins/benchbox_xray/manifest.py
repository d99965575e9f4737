"""Per-file content manifests: relative path -> SHA-256 of every file of a source folder.

A source whose download has no stable bytes (GitHub's archive of a commit is generated on
request; Mendeley's download is not guaranteed byte-stable) is checked by its *content* after
extraction instead: each file against the manifest shipped with benchbox for the pinned commit or
version. ``tools/make_data_manifest.py`` writes these files from a copy of the real data.

The format (JSON)::

    {
      "format": "benchbox-data-manifest/1",
      "source": "cohen",
      "version": "github.com/ieee8023/covid-chestxray-dataset at commit 0f7245db...",
      "folder": "covid-chestxray-dataset",
      "algorithm": "sha256",
      "files": {"metadata.csv": "<64 hex digits>", "images/1-s2.0-....jpg": "..."}
    }

Paths are POSIX, relative to the source folder (``<data root>/<folder>``). A ``.git`` folder (a
checkout placed by hand) is never part of the content. An absent file, or one whose ``files`` is
empty, means *no manifest is shipped*: verification then says so and checks the layout only.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from benchbox.errors import DataError

FORMAT = "benchbox-data-manifest/1"
IGNORED_DIRS = {".git"}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def walk_files(base: Path) -> list[str]:
    """Every regular file under ``base``, as sorted POSIX paths relative to it (``.git`` left out)."""
    base = Path(base)
    found = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_DIRS)
        rel_dir = Path(dirpath).relative_to(base)
        for name in filenames:
            if (Path(dirpath) / name).is_file():
                found.append((rel_dir / name).as_posix())
    return sorted(found)


@dataclass
class Manifest:
    source: str
    folder: str
    version: str = ""
    files: dict[str, str] = field(default_factory=dict)
    path: Path | None = None  # where it was read from

    def to_json(self) -> str:
        return (
            json.dumps(
                {
                    "format": FORMAT,
                    "source": self.source,
                    "version": self.version,
                    "folder": self.folder,
                    "algorithm": "sha256",
                    "files": dict(sorted(self.files.items())),
                },
                indent=1,
            )
            + "\n"
        )


def load_manifest(path: Path, source: str, folder: str) -> Manifest:
    """Read a shipped manifest; an absent file gives an empty one. A malformed file is a DataError."""
    path = Path(path)
    if not path.exists():
        return Manifest(source, folder, path=path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, expected {FORMAT!r}")
        if data.get("algorithm", "sha256") != "sha256":
            raise ValueError(f"algorithm {data['algorithm']!r} is not supported (sha256 only)")
        files = data.get("files") or {}
        if not isinstance(files, dict) or not all(isinstance(v, str) and len(v) == 64 for v in files.values()):
            raise ValueError("'files' must map relative paths to 64-hex-digit SHA-256 strings")
    except (ValueError, AttributeError) as exc:
        raise DataError(f"{path}: not a valid benchbox data manifest ({exc})") from None
    return Manifest(
        data.get("source", source),
        data.get("folder", folder),
        data.get("version", ""),
        {str(k): v.lower() for k, v in files.items()},
        path,
    )


def make_manifest(base: Path, source: str, folder: str, version: str = "") -> Manifest:
    base = Path(base)
    return Manifest(source, folder, version, {rel: sha256_file(base / rel) for rel in walk_files(base)})


@dataclass
class Comparison:
    checked: int
    missing: list[str]
    changed: list[str]
    extra: list[str]


def compare(base: Path, manifest: Manifest) -> Comparison:
    """Hash every file the manifest lists under ``base``; names are relative to ``base``."""
    base = Path(base)
    present = set(walk_files(base)) if base.is_dir() else set()
    missing, changed = [], []
    checked = 0
    for rel, expected in sorted(manifest.files.items()):
        if rel not in present:
            missing.append(rel)
            continue
        checked += 1
        if sha256_file(base / rel) != expected:
            changed.append(rel)
    extra = sorted(present - set(manifest.files))
    return Comparison(checked, missing, changed, extra)
