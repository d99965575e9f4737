"""Frozen-prefix activations, computed once and reused (framework-free; engines fill it).

Everything below the cutoff is frozen and, without augmentation, its output for an image never
changes; the study's protocol would recompute it every epoch of every fold. Engines store the
prefix output per image id under a key naming everything it depends on (backbone, cutoff,
weights, input size, and the fold seed when the weights are random). Memory is bounded: the least
recently used entries are evicted first, and an entry too large for the limit on its own spills to
a memory-mapped file on disk.
"""

from __future__ import annotations

import os
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

DEFAULT_LIMIT = int(float(os.environ.get("BENCHBOX_PREFIX_CACHE_MB", "4096")) * 2**20)
DEVICE_LIMIT = int(float(os.environ.get("BENCHBOX_PREFIX_CACHE_DEVICE_MB", "8192")) * 2**20)


def _on_host(array) -> bool:
    """NumPy arrays (and memory maps) live in host memory; an engine may also store its own device
    tensors (anything with ``nbytes``, slicing and integer-array indexing, e.g. a CUDA tensor)."""
    return isinstance(array, np.ndarray)


class PrefixCache:
    """Entries (one per key) of per-image prefix outputs, least recently used evicted first.

    Host entries (NumPy) count against ``limit_bytes``; when the newest entry alone does not fit,
    it spills to a memory-mapped file instead. Device entries (an engine's GPU tensors: copying
    them to the host and back every fold costs more than the prefix pass) count against
    ``device_limit_bytes`` and are evicted, never spilled. Entries keyed by a fold seed (random
    weights) are never read again after their fold, so eviction is what keeps a run's memory flat."""

    def __init__(
        self,
        limit_bytes: int = DEFAULT_LIMIT,
        directory: str | os.PathLike | None = None,
        device_limit_bytes: int = DEVICE_LIMIT,
    ):
        self.limit_bytes = limit_bytes
        self.device_limit_bytes = device_limit_bytes
        self.directory = Path(directory) if directory else None
        self._entries: OrderedDict[tuple, tuple[dict[str, int], list, int, str]] = OrderedDict()
        self.memory_bytes = 0
        self.disk_bytes = 0
        self.device_bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get(self, key: tuple, ids) -> list | None:
        """The cached outputs (one array per boundary tensor) for these ids, or None if any is missing.
        Asked for exactly the ids it was stored with, in that order, the stored arrays come back as
        they are (no copy)."""
        entry = self._entries.get(key)
        if entry is None or any(i not in entry[0] for i in ids):
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        index, arrays = entry[0], entry[1]
        rows = np.fromiter((index[i] for i in ids), dtype=np.int64, count=len(ids))
        if len(rows) == len(index) and np.array_equal(rows, np.arange(len(rows))):
            return [np.asarray(a) if _on_host(a) else a for a in arrays]
        return [np.asarray(a[rows]) if _on_host(a) else a[rows] for a in arrays]

    def put(self, key: tuple, ids, arrays: list) -> None:
        """Store outputs for ids (replacing the entry of that key), evicting the least recently used
        entries of the same kind (host or device) to make room."""
        self._drop(key)
        size = sum(int(a.nbytes) for a in arrays)
        where = "host" if all(_on_host(a) for a in arrays) else "device"
        limit = self.limit_bytes if where == "host" else self.device_limit_bytes
        kinds = ("host", "disk") if where == "host" else ("device",)
        for old in [k for k, e in self._entries.items() if e[3] in kinds]:
            if self._used(where) + size <= limit:
                break
            self._drop(old)
            self.evictions += 1
        if where == "device":
            self.device_bytes += size
        elif self.memory_bytes + size > self.limit_bytes:
            arrays = [self._spill(a) for a in arrays]
            self.disk_bytes += size
            where = "disk"
        else:
            self.memory_bytes += size
        self._entries[key] = ({i: n for n, i in enumerate(ids)}, arrays, size, where)

    def _used(self, where: str) -> int:
        return self.memory_bytes if where == "host" else self.device_bytes

    def _drop(self, key: tuple) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        _, _, size, where = entry
        if where == "host":
            self.memory_bytes -= size
        elif where == "device":
            self.device_bytes -= size
        else:
            self.disk_bytes -= size

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
        self.memory_bytes = self.disk_bytes = self.device_bytes = 0


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


def host_round_trip_reason(boundary_elements: int, input_elements: int, cutoff: int, layers: int) -> str | None:
    """Why caching would slow a GPU fold down when the cached activations pass through host memory
    (Keras: ``predict`` returns NumPy, ``fit`` copies batches back), or None when it pays.

    Measured on one H100 (docs/performance.md): Keras MobileNet v2 at the study's cutoff (10 of 154
    layers; its boundary tensors hold 24x the grayscale input's values at 200x266) spent 16 s of a
    42 s fold computing and storing activations, and most of the rest copying them per epoch, for
    6 s of training steps. Caching pays where the prefix is most of the network (the study's other
    four: 80-94% of the layers) or its output is no larger than the image."""
    if boundary_elements <= input_elements or cutoff * 2 >= layers:
        return None
    return (
        f"on a GPU the frozen prefix ({cutoff} of {layers} layers) is cheaper to recompute than its output "
        f"({boundary_elements / input_elements:.1f}x the input's values) is to move through host memory"
    )
