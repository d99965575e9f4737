"""Image preprocessing shared by every data set: pad to the target aspect ratio with black (no
distortion), resize, keep one grayscale channel. Engines repeat it to three channels and apply
each backbone's own ImageNet preprocessing.

Decoded, resized images are cached in memory and on disk, keyed by the file's content hash and
the target size, so a second fold, backbone or run never decodes the same file again.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, UnidentifiedImageError

from benchbox.errors import DataError


def pad_to_aspect(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad a (h, w) image with black, centred, to the aspect ratio height:width."""
    h, w = img.shape[:2]
    target = width / height
    if abs(w / h - target) < 1e-9:
        return img
    if w / h < target:  # too narrow: pad left and right
        new_w = int(round(h * target))
        pad = new_w - w
        spec = ((0, 0), (pad // 2, pad - pad // 2))
    else:  # too wide: pad top and bottom
        new_h = int(round(w / target))
        pad = new_h - h
        spec = ((pad // 2, pad - pad // 2), (0, 0))
    return np.pad(img, spec, mode="constant", constant_values=0)


def to_grayscale_array(image: Image.Image) -> np.ndarray:
    """Any PIL image as 8-bit grayscale; 16-bit and float images are rescaled to 0..255."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return arr.astype(np.uint8)
    return np.asarray(image.convert("L"), dtype=np.uint8)


def fit_to_size(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pad to the aspect ratio of ``size`` (height, width), then resize to exactly ``size``."""
    height, width = size
    padded = pad_to_aspect(gray, height, width)
    if padded.shape == (height, width):
        return padded
    resized = Image.fromarray(padded).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def decode_file(path: str | os.PathLike, size: tuple[int, int]) -> np.ndarray:
    """Read one image file, grayscale, padded and resized; a clear error names a bad file."""
    try:
        with Image.open(path) as im:
            im.load()
            gray = to_grayscale_array(im)
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"cannot decode image {path}: {exc}. Replace or remove the file, or set "
                        f"skip_unreadable = true on the dataset to skip it.") from None
    return fit_to_size(gray, size)


def file_digest(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class DecodeCache:
    """Decoded images keyed by (file content, size): in memory, and as .npy files on disk.

    ``hits`` and ``misses`` count lookups so tests and benchmarks can see the cache work.
    """

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = Path(directory) if directory else None
        self._memory: dict[tuple[str, tuple[int, int]], np.ndarray] = {}
        self._digests: dict[tuple[str, float, int], str] = {}
        self.hits = 0
        self.misses = 0

    def _digest(self, path: str) -> str:
        st = os.stat(path)
        key = (os.path.abspath(path), st.st_mtime, st.st_size)
        if key not in self._digests:
            self._digests[key] = file_digest(path)
        return self._digests[key]

    def get(self, path: str | os.PathLike, size: tuple[int, int]) -> np.ndarray:
        path = str(path)
        if not os.path.exists(path):
            raise DataError(f"image file not found: {path}")
        digest = self._digest(path)
        key = (digest, tuple(size))
        if key in self._memory:
            self.hits += 1
            return self._memory[key]
        disk = self.directory / f"{size[0]}x{size[1]}" / f"{digest}.npy" if self.directory else None
        if disk is not None and disk.exists():
            try:
                arr = np.load(disk)
                self.hits += 1
                self._memory[key] = arr
                return arr
            except (OSError, ValueError):
                pass  # a damaged cache entry is simply recomputed
        self.misses += 1
        arr = decode_file(path, size)
        self._memory[key] = arr
        if disk is not None:
            disk.parent.mkdir(parents=True, exist_ok=True)
            tmp = disk.with_suffix(f".{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, arr)
            os.replace(tmp, disk)
        return arr

    def load_many(self, paths: Iterable[str], size: tuple[int, int]) -> np.ndarray:
        arrays = [self.get(p, size) for p in paths]
        if not arrays:
            return np.zeros((0, *size), dtype=np.uint8)
        return np.stack(arrays)
