"""Frozen-prefix activations, computed once and reused (framework-free; engines fill it).

Everything below the cutoff is frozen and, without augmentation, its output for an image never
changes; the study's protocol would recompute it every epoch of every fold. Engines store the
prefix output per image id under a key naming everything it depends on (backbone, cutoff,
weights, input size, and the fold seed when the weights are random). Memory is bounded: past
``limit_bytes`` entries spill to memory-mapped files on disk.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

DEFAULT_LIMIT = int(float(os.environ.get("BENCHBOX_PREFIX_CACHE_MB", "4096")) * 2**20)


class PrefixCache:
    def __init__(self, limit_bytes: int = DEFAULT_LIMIT, directory: str | os.PathLike | None = None):
        self.limit_bytes = limit_bytes
        self.directory = Path(directory) if directory else None
        self._entries: dict[tuple, tuple[dict[str, int], list[np.ndarray]]] = {}
        self.memory_bytes = 0
        self.disk_bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple, ids) -> list[np.ndarray] | None:
        """The cached outputs (one array per boundary tensor) for these ids, or None if any is missing."""
        entry = self._entries.get(key)
        if entry is None or any(i not in entry[0] for i in ids):
            self.misses += 1
            return None
        self.hits += 1
        rows = np.fromiter((entry[0][i] for i in ids), dtype=np.int64, count=len(ids))
        return [np.asarray(a[rows]) for a in entry[1]]

    def put(self, key: tuple, ids, arrays: list[np.ndarray]) -> None:
        """Store outputs for ids (replacing the entry of that key)."""
        size = sum(a.nbytes for a in arrays)
        if self.memory_bytes + size > self.limit_bytes:
            arrays = [self._spill(a) for a in arrays]
            self.disk_bytes += size
        else:
            self.memory_bytes += size
        self._entries[key] = ({i: n for n, i in enumerate(ids)}, arrays)

    def _spill(self, array: np.ndarray) -> np.ndarray:
        directory = self.directory or Path(tempfile.gettempdir()) / "benchbox-prefix-cache"
        directory.mkdir(parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(dir=directory, suffix=".f32")
        os.close(fd)
        mm = np.memmap(path, dtype=array.dtype, mode="w+", shape=array.shape)
        mm[:] = array
        mm.flush()
        os.unlink(path)  # the mapping stays valid; the file disappears with the process
        return mm

    def clear(self) -> None:
        self._entries.clear()
        self.memory_bytes = self.disk_bytes = 0


#: one cache per process, shared by the folds and backbones of a run
CACHE = PrefixCache()


def cache_key(framework: str, network: str, options, seed: int) -> tuple:
    """Everything the prefix output depends on: network, cutoff, weights (a file by its
    modification time), input size, width; plus the fold seed when the weights are random."""
    from benchbox_engine_common.networks import weights_kind

    kind = weights_kind(options["weights"])
    weights = options["weights"]
    if kind == "file":
        weights = f"{weights}@{os.path.getmtime(os.path.expanduser(weights))}"
    key = (framework, network, int(options["cutoff"]), weights, tuple(options["input_size"]), options.get("alpha"))
    return key if kind != "none" else key + (seed,)


def job_ids(job) -> tuple[list[str], list[str]]:
    """The ids that name a job's train and test images (positional ones outside a run)."""
    train = list(job.train_ids) if job.train_ids is not None else [f"train/{i}" for i in range(len(job.x_train))]
    test = list(job.test_ids) if job.test_ids is not None else [f"test/{i}" for i in range(len(job.x_test))]
    return train, test


def fallback_reason(options, training) -> str | None:
    """Why prefix caching cannot apply to this backbone and training, or None when it can."""
    if not options.get("cache_prefix", True):
        return "cache_prefix = false in the suite"
    if getattr(training, "augment", False):
        return "augmentation changes the prefix's input every epoch"
    if int(options.get("cutoff", 0)) <= 1:
        return "nothing is frozen below the cutoff"
    return None
