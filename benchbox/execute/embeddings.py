"""The embedding cache: a frozen encoder's pooled features of each image, computed once, ever.

Features are keyed by the encoder (its plugin name and what decides its features: the backbone's
``embed_identity``, the weights by the content hash of their file or by their name) and by each
image's content hash (the uint8 pixels as fed: the data set's preprocessing and the input size are in
them). They live on disk under the user cache directory (``$BENCHBOX_CACHE/embeddings``, else
platformdirs' user cache ``benchbox/cache/embeddings``), shared by folds, runs and suites:

    embeddings/<encoder key>/encoder.json           what the key stands for (for `benchbox cache info`)
    embeddings/<encoder key>/<h[:2]>/<h>.f32        one image: magic, dimension, checksum, float32 data
    embeddings/<encoder key>/timing.json            the encoder's inference time on one batch, per machine,
                                                    batch shape, device and thread settings (the harness's
                                                    throughput figure: a warm run runs no encoder at all)

Every entry is written to a temporary file and renamed (atomic); a reader checks its magic, size and
checksum, and an entry that fails is recomputed and rewritten, never used. The cache keeps under a size
limit (``BENCHBOX_EMBED_CACHE_LIMIT``, e.g. "2GB"; default 4 GiB) by removing the least recently
written entries. A cache directory that cannot be written (read-only, full, a file in the way) turns
caching off for the process with one warning; the run goes on computing features (nothing is lost).

Framework-free: the features come from a callable (a backbone's ``embed``).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchbox.data.datadir import cache_root

MAGIC = b"BBE1"
HEADER = struct.Struct("<4sI16s")  # magic, feature dimension, blake2b-128 of the float32 data
DEFAULT_LIMIT = 4 * 2**30
TIMINGS = "timing.json"  # the encoder's timed inference batches, by machine and settings
UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def embeddings_dir() -> Path:
    return cache_root() / "embeddings"


def parse_size(text: str) -> int:
    """'500MB', '2GiB', '1000000' -> bytes; ValueError naming the forms it takes."""
    s = str(text).strip().lower().replace(" ", "")
    number = s.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = s[len(number) :]
    if unit not in UNITS or not number:
        raise ValueError(f"{text!r} is not a size; write e.g. 500MB, 2GB, 2GiB or a number of bytes")
    return int(float(number) * UNITS[unit])


def size_limit() -> int:
    """The cache's size limit in bytes (BENCHBOX_EMBED_CACHE_LIMIT, else 4 GiB)."""
    raw = os.environ.get("BENCHBOX_EMBED_CACHE_LIMIT", "").strip()
    if not raw:
        return DEFAULT_LIMIT
    try:
        return parse_size(raw)
    except ValueError as exc:
        from benchbox.errors import BenchboxError

        raise BenchboxError(f"BENCHBOX_EMBED_CACHE_LIMIT: {exc}") from None


def image_hashes(images: np.ndarray) -> list[str]:
    """The content hash of each uint8 image (its shape included): what the encoder was fed."""
    out = []
    for img in images:
        h = hashlib.blake2b(digest_size=16)
        h.update(str(img.shape).encode())
        h.update(np.ascontiguousarray(img).data)  # the pixels' buffer, not a copy of it
        out.append(h.hexdigest())
    return out


_FILE_HASHES: dict[tuple, str] = {}


def file_hash(path: str) -> str:
    """sha256 of a weights file (remembered per path, modification time and size)."""
    p = Path(os.path.expanduser(path))
    st = p.stat()
    key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _FILE_HASHES:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _FILE_HASHES[key] = h.hexdigest()
    return _FILE_HASHES[key]


def weights_identity(weights: Any) -> str:
    """A weights file by its content hash; a name ("imagenet", "none", a hub id) as it is."""
    if isinstance(weights, str) and weights.lower() not in ("imagenet", "none", "pretrained"):
        p = Path(os.path.expanduser(weights))
        if p.is_file():
            return f"sha256:{file_hash(str(p))}"
        if p.is_dir():  # a local snapshot (transformers, open_clip): every file's hash, by name
            parts = sorted(
                f"{f.relative_to(p)}:{file_hash(str(f))}" for f in p.rglob("*") if f.is_file() and f.stat().st_size
            )
            return "dir-sha256:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()
    return str(weights)


def encoder_key(plugin: str, identity: Mapping[str, Any]) -> tuple[str, dict]:
    """(the encoder's key, what it stands for): ``identity`` is what decides the features (the
    backbone's ``embed_identity``); a ``weights`` entry in it is replaced by its ``weights_identity``."""
    what = {"plugin": plugin, **{k: v for k, v in identity.items()}}
    if "weights" in what:
        what["weights"] = weights_identity(what["weights"])
    text = json.dumps(what, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24], what


def where_key(where: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(dict(where), sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class CacheStats:
    hits: int = 0
    computed: int = 0
    corrupt: int = 0
    written: int = 0
    evicted: int = 0
    embed_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "hits": self.hits,
            "computed": self.computed,
            "corrupt_recomputed": self.corrupt,
            "written": self.written,
            "evicted": self.evicted,
            "embed_seconds": round(self.embed_seconds, 4),
            **({"warning": "; ".join(self.warnings)} if self.warnings else {}),
        }


class EmbeddingCache:
    """Features by (encoder key, image hash) on disk. ``root=None``: the user cache directory;
    ``enabled=False``: compute everything, store nothing (BENCHBOX_EMBED_CACHE=off does the same)."""

    def __init__(self, root: Path | None = None, limit: int | None = None, enabled: bool | None = None):
        self.root = Path(root) if root is not None else embeddings_dir()
        self.limit = size_limit() if limit is None else int(limit)
        if enabled is None:
            enabled = os.environ.get("BENCHBOX_EMBED_CACHE", "on").strip().lower() not in ("off", "0", "no", "false")
        self.enabled = enabled
        self.disabled_reason = "" if enabled else "turned off (BENCHBOX_EMBED_CACHE=off)"
        self._warned = False
        self._size: int | None = None

    # --- paths ------------------------------------------------------------------------------------
    def entry_path(self, key: str, image_hash: str) -> Path:
        return Path(self.entry_file(key, image_hash))

    def entry_file(self, key: str, image_hash: str) -> str:
        """The entry's path as a string: a warm run reads tens of thousands of entries, and pathlib's joins
        cost more than the reads."""
        return os.path.join(str(self.root), key, image_hash[:2], image_hash + ".f32")

    # --- reading ----------------------------------------------------------------------------------
    def read(self, key: str, image_hash: str) -> np.ndarray | None | bool:
        """The features of one image; None when absent; False when the entry is damaged."""
        try:
            with open(self.entry_file(key, image_hash), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        except OSError:
            return False
        if len(data) < HEADER.size:
            return False
        magic, dim, digest = HEADER.unpack_from(data)
        body = data[HEADER.size :]
        if magic != MAGIC or len(body) != 4 * dim or hashlib.blake2b(body, digest_size=16).digest() != digest:
            return False
        return np.frombuffer(body, dtype="<f4").copy()

    # --- writing ----------------------------------------------------------------------------------
    def _disable(self, stats: CacheStats, exc: OSError) -> None:
        self.enabled = False
        self.disabled_reason = f"{self.root}: {exc.strerror or exc}"
        if not self._warned:
            self._warned = True
            stats.warnings.append(
                f"embedding cache off for this run: cannot write {self.root} ({exc.strerror or exc}); features are "
                "computed without caching (nothing is lost). Free space, fix the permissions, or point "
                "BENCHBOX_CACHE at a writable folder"
            )

    def _write(self, key: str, image_hash: str, features: np.ndarray) -> int:
        body = np.ascontiguousarray(features, dtype="<f4").tobytes()
        data = HEADER.pack(MAGIC, len(body) // 4, hashlib.blake2b(body, digest_size=16).digest()) + body
        path = self.entry_path(key, image_hash)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return len(data)

    def _describe(self, key: str, what: Mapping[str, Any], dim: int) -> None:
        meta = self.root / key / "encoder.json"
        if meta.exists():
            return
        text = json.dumps({**what, "dimension": int(dim), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=1)
        fd, tmp = tempfile.mkstemp(dir=meta.parent, prefix=".encoder.json.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, meta)

    # --- the one call a scheme makes ----------------------------------------------------------------
    def features(
        self,
        key: str,
        what: Mapping[str, Any],
        images: np.ndarray,
        compute: Callable[[np.ndarray], np.ndarray],
        stats: CacheStats | None = None,
    ) -> np.ndarray:
        """(N, D) float32 features of ``images``: cached ones read, the others computed by ``compute``
        (one call, the missing images only, in their order) and written."""
        stats = stats if stats is not None else CacheStats()
        hashes = image_hashes(images)
        found: dict[int, np.ndarray] = {}
        if self.enabled:
            for i, h in enumerate(hashes):
                got = self.read(key, h)
                if got is False:
                    stats.corrupt += 1
                elif got is not None:
                    found[i] = got
        dims = {v.shape[0] for v in found.values()}
        if len(dims) > 1:  # entries of one encoder disagree: none of them is trusted
            stats.corrupt += len(found)
            found = {}
        missing = [i for i in range(len(images)) if i not in found]
        stats.hits += len(found)
        computed = None
        if missing:
            t0 = time.perf_counter()
            computed = np.asarray(compute(images[missing]), dtype=np.float32)
            stats.embed_seconds += time.perf_counter() - t0
            stats.computed += len(missing)
            if computed.ndim != 2 or computed.shape[0] != len(missing):
                raise ValueError(
                    f"embed() returned features of shape {computed.shape}; expected ({len(missing)}, D): one row per image"
                )
            if dims and computed.shape[1] not in dims:  # cached entries of another dimension: none is trusted
                stats.corrupt += len(found)
                stats.hits -= len(found)
                found, missing = {}, list(range(len(images)))
                t0 = time.perf_counter()
                computed = np.asarray(compute(images), dtype=np.float32)
                stats.embed_seconds += time.perf_counter() - t0
                stats.computed += len(images)
        dim = computed.shape[1] if computed is not None else next(iter(dims)) if dims else 0
        out = np.empty((len(images), dim), dtype=np.float32)
        for i, v in found.items():
            out[i] = v
        if computed is not None:
            out[missing] = computed
            if self.enabled:
                try:
                    (self.root / key).mkdir(parents=True, exist_ok=True)
                    self._describe(key, what, dim)
                    written = 0
                    for row, i in enumerate(missing):
                        written += self._write(key, hashes[i], computed[row])
                    stats.written += len(missing)
                    self._grow(written, stats)
                except OSError as exc:
                    self._disable(stats, exc)
        return out

    # --- the encoder's inference time ----------------------------------------------------------------
    def timing_path(self, key: str) -> Path:
        return self.root / key / TIMINGS

    def timing(self, key: str, where: Mapping[str, Any]) -> dict | None:
        """The encoder's timed batch on this machine and settings (``where``): {"seconds", "measured", ...};
        None when it was never timed so (or the file cannot be read)."""
        if not self.enabled:
            return None
        try:
            table = json.loads(self.timing_path(key).read_text(encoding="utf-8"))
            row = table.get(where_key(where))
            return row if isinstance(row, dict) and isinstance(row.get("seconds"), (int, float)) else None
        except (OSError, ValueError, AttributeError):
            return None

    def store_timing(self, key: str, what: Mapping[str, Any], where: Mapping[str, Any], seconds: float) -> None:
        """Keep a timed batch beside the encoder's features (atomic; a lost race only means timing again)."""
        if not self.enabled:
            return
        path = self.timing_path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                table = json.loads(path.read_text(encoding="utf-8"))
                table = table if isinstance(table, dict) else {}
            except (OSError, ValueError):
                table = {}
            table[where_key(where)] = {
                "seconds": float(seconds),
                "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "where": dict(where),
            }
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{TIMINGS}.", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps(table, indent=1, sort_keys=True, default=str))
            os.replace(tmp, path)
        except OSError:
            pass  # not kept: the next run times the encoder again

    # --- size -----------------------------------------------------------------------------------------
    def entries(self) -> list[tuple[Path, int, float]]:
        """Every entry file: (path, bytes, modification time)."""
        out = []
        if not self.root.is_dir():
            return out
        for enc in os.scandir(self.root):
            if not enc.is_dir():
                continue
            for sub in os.scandir(enc.path):
                if not sub.is_dir():
                    continue
                for f in os.scandir(sub.path):
                    if f.name.endswith(".f32"):
                        try:
                            st = f.stat()
                        except OSError:
                            continue
                        out.append((Path(f.path), st.st_size, st.st_mtime))
        return out

    def _grow(self, written: int, stats: CacheStats) -> None:
        if self._size is None:
            self._size = sum(size for _, size, _ in self.entries())
        else:
            self._size += written
        if self._size <= self.limit:
            return
        files = sorted(self.entries(), key=lambda e: e[2])  # least recently written first
        total = sum(size for _, size, _ in files)
        target = int(self.limit * 0.9)
        for path, size, _ in files:
            if total <= target:
                break
            try:
                path.unlink()
                total -= size
                stats.evicted += 1
            except OSError:
                pass
        self._size = total

    def info(self) -> list[dict]:
        """One row per encoder: its key, what it stands for, images and bytes."""
        rows = []
        if not self.root.is_dir():
            return rows
        by_key: dict[str, list] = {}
        for path, size, mtime in self.entries():
            by_key.setdefault(path.parent.parent.name, []).append((size, mtime))
        for enc in sorted(p for p in self.root.iterdir() if p.is_dir()):
            try:
                what = json.loads((enc / "encoder.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                what = {}
            files = by_key.get(enc.name, [])
            rows.append(
                {
                    "key": enc.name,
                    "encoder": what.get("plugin", "?"),
                    "weights": what.get("weights", "?"),
                    "input_size": what.get("input_size", ""),
                    "dimension": what.get("dimension", ""),
                    "images": len(files),
                    "bytes": sum(s for s, _ in files),
                    "last_written": max((m for _, m in files), default=None),
                }
            )
        return rows

    def clear(self, encoder: str | None = None, timings_only: bool = False) -> tuple[int, int]:
        """Remove every entry (or those of encoders whose plugin name or key matches); (encoders, bytes).
        ``timings_only``: only the encoders' kept inference times (the next run times them again)."""
        import shutil

        removed, freed = 0, 0
        for row in self.info():
            if encoder is not None and encoder not in (row["key"], row["encoder"]):
                continue
            if timings_only:
                path = self.timing_path(row["key"])
                if path.exists():
                    size = path.stat().st_size
                    path.unlink(missing_ok=True)
                    removed += 1
                    freed += size
                continue
            shutil.rmtree(self.root / row["key"], ignore_errors=True)
            removed += 1
            freed += row["bytes"]
        return removed, freed
