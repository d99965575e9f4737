"""Image preprocessing shared by every data set: pad to the target aspect ratio with black (no
distortion), resize, keep one grayscale channel (``channels = 1``, the default: (H, W) per image)
or three RGB channels (``channels = 3``: (H, W, 3)). Engines repeat grayscale to three channels,
feed colour as it is, and apply each backbone's own ImageNet preprocessing.

Decoded, resized images are cached in memory and on disk, keyed by the file's content hash and
the target size, so a second fold, backbone or run never decodes the same file again.

DICOM files (``.dcm``, ``.dicom``, or any file with the ``DICM`` preamble that Pillow cannot open)
are read with pydicom, an optional dependency (``pip install 'benchbox[dicom]'``): the modality
LUT (RescaleSlope/RescaleIntercept) is applied, then the stored window (WindowCenter/WindowWidth,
the first one if several) or, without one, a min-max stretch to 8 bits; MONOCHROME1 is inverted so
that bone is bright as in MONOCHROME2. Colour DICOMs (RGB, YBR_* converted to RGB, PALETTE COLOR
through its lookup table) are converted to grayscale like any other image, or kept as RGB when the
data set loads colour (``channels = 3``), where grayscale images and MONOCHROME DICOMs are repeated
to three channels instead.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from benchbox.data.datadir import cache_root
from benchbox.errors import DataError


def pad_to_aspect(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad a (h, w) or (h, w, 3) image with black, centred, to the aspect ratio height:width."""
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
    spec += ((0, 0),) * (img.ndim - 2)  # colour: no padding along the channels
    return np.pad(img, spec, mode="constant", constant_values=0)


def to_grayscale_array(image: Image.Image) -> np.ndarray:
    """Any PIL image as 8-bit grayscale; 16-bit and float images are rescaled to 0..255."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return arr.astype(np.uint8)
    return np.asarray(image.convert("L"), dtype=np.uint8)


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Any PIL image as 8-bit RGB (h, w, 3): colour as it is (transparency dropped, palettes
    expanded), grayscale (16-bit and float rescaled as in ``to_grayscale_array``) repeated."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F", "L", "1"):
        return gray_to_rgb(to_grayscale_array(image))
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def gray_to_rgb(images: np.ndarray) -> np.ndarray:
    """Grayscale (..., H, W) repeated to RGB (..., H, W, 3)."""
    return np.repeat(np.asarray(images)[..., None], 3, axis=-1)


def rgb_to_gray(images: np.ndarray) -> np.ndarray:
    """RGB (..., H, W, 3) uint8 to grayscale (..., H, W): ITU-R 601 luma, the same integer formula
    as Pillow's ``convert("L")``, so a colour file converted here or by the grayscale loader matches."""
    x = np.asarray(images, dtype=np.uint32)
    luma = (x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 0x8000) >> 16
    return luma.astype(np.uint8)


def channels_of(images: np.ndarray) -> int:
    """1 for a grayscale batch (N, H, W), 3 for a colour one (N, H, W, 3)."""
    return 3 if np.ndim(images) == 4 else 1


def to_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """A batch (N, H, W) or (N, H, W, 3) as ``channels`` (1 or 3): grayscale repeated to RGB, or
    colour to its luma; unchanged (the same array) when it has them already."""
    have = channels_of(images)
    if have == channels:
        return images
    return gray_to_rgb(images) if channels == 3 else rgb_to_gray(images)


def fit_to_size(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pad to the aspect ratio of ``size`` (height, width), then resize to exactly ``size``; a
    (h, w) grayscale or (h, w, 3) colour image."""
    height, width = size
    padded = pad_to_aspect(gray, height, width)
    if padded.shape[:2] == (height, width):
        return padded
    resized = Image.fromarray(padded).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


DICOM_SUFFIXES = (".dcm", ".dicom")
DICOM_INSTALL = "pip install 'benchbox[dicom]'"
#: bump when the DICOM pipeline changes what an image becomes, so no stale decode is reused from disk
DICOM_DECODER_VERSION = 1


def has_dicom_preamble(path: str | os.PathLike) -> bool:
    """True when the file carries the DICOM Part 10 marker ``DICM`` at byte 128 (reads 132 bytes)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _decoder_tag(path: str) -> str:
    """Part of a disk cache name that changes with the decoder: DICOM images carry its version."""
    if Path(path).suffix.lower() in DICOM_SUFFIXES or has_dicom_preamble(path):
        return f"-dicom{DICOM_DECODER_VERSION}"
    return ""


def _window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 VOI LUT functions, onto 0..255 (float)."""
    if function == "SIGMOID":
        return 255.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip(((values - center) / width + 0.5) * 255.0, 0, 255)
    if width <= 1:  # LINEAR needs width >= 1; a width of 1 is a threshold at the centre
        return np.where(values > center - 0.5, 255.0, 0.0)
    return np.clip(((values - (center - 0.5)) / (width - 1) + 0.5) * 255.0, 0, 255)


def _first(value) -> float:
    """A DICOM (possibly multi-valued) numeric element as one float: the first value."""
    if isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and not isinstance(value, (str, bytes))):
        value = value[0]
    return float(value)


def _number(value, default: float) -> float:
    try:
        return _first(value)
    except (TypeError, ValueError, IndexError):
        return default


def _stored_window(ds) -> tuple[float, float] | None:
    """(center, width) of the first stored window, or None when there is none usable."""
    try:
        center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    except (TypeError, ValueError, IndexError):  # absent or empty
        return None
    return (center, width) if np.isfinite(center) and np.isfinite(width) and width > 0 else None


def _min_max(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    return (values - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(values, dtype=np.float64)


def decode_dicom(path: str | os.PathLike, channels: int = 1) -> np.ndarray:
    """One DICOM image as 8-bit grayscale (h, w), displayed as a reader would see it; with
    ``channels = 3`` as RGB (h, w, 3): colour as stored (YBR converted), MONOCHROME repeated.

    Raises DataError naming the file when pydicom is missing, when the file is not DICOM, has no
    pixel data, holds several frames, or its pixel data cannot be decoded (e.g. a compressed
    transfer syntax without a decoder installed)."""
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:
        raise DataError(f"{path} is a DICOM file; reading DICOM needs pydicom: {DICOM_INSTALL}") from None
    try:
        try:
            ds = pydicom.dcmread(str(path))
        except InvalidDicomError:  # no preamble: some writers omit it
            ds = pydicom.dcmread(str(path), force=True)
            known = ("SOPClassUID", "Modality", "Rows", "PixelData", "StudyInstanceUID", "PatientID")
            if not any(tag in ds for tag in known):
                raise DataError(f"{path} is not a DICOM file (no DICM preamble and no DICOM elements found)") from None
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path} is not a readable DICOM file: {exc}") from None
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        kind = getattr(ds, "Modality", "") or getattr(ds, "SOPClassUID", "")
        raise DataError(
            f"{path} is a DICOM file without pixel data ({'modality/class ' + str(kind) + '; ' if kind else ''}"
            "e.g. a report or a presentation state), not an image: remove it from the data set, or set "
            "skip_unreadable = true on the data set to skip such files"
        )
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DataError(
            f"{path}: a multi-frame DICOM ({frames} frames); benchbox reads single images only: "
            "export the frame you want as its own file"
        )
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    try:
        arr = ds.pixel_array
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax) or "unknown"
        raise DataError(
            f"cannot decode the pixel data of DICOM file {path} (transfer syntax {name}): {exc}. "
            "Compressed DICOM needs a decoder: pip install pylibjpeg pylibjpeg-libjpeg "
            "pylibjpeg-openjpeg (or python-gdcm), or convert the file to uncompressed"
        ) from None
    try:
        from pydicom.pixels import apply_color_lut, apply_modality_lut, convert_color_space
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import apply_color_lut, apply_modality_lut, convert_color_space
    try:
        if photometric == "PALETTE COLOR":
            arr = apply_color_lut(arr, ds)
            photometric = "RGB"
        if arr.ndim == 3:  # colour: as RGB, then to gray as for any colour image
            if photometric.startswith("YBR") and int(pydicom.__version__.split(".")[0]) < 3:
                arr = convert_color_space(arr, photometric, "RGB")  # pydicom 3 converts in pixel_array
            if arr.dtype != np.uint8:
                arr = _min_max(arr.astype(np.float64)).round().astype(np.uint8)
            rgb = np.ascontiguousarray(arr[..., :3])
            if channels == 3:
                return rgb
            return np.asarray(Image.fromarray(rgb, "RGB").convert("L"), dtype=np.uint8)
        if arr.ndim != 2:
            raise ValueError(f"unexpected pixel array shape {arr.shape}")
        stored_8bit = arr.dtype == np.uint8
        rescaled = (
            _number(ds.get("RescaleSlope"), 1.0) != 1.0
            or _number(ds.get("RescaleIntercept"), 0.0) != 0.0
            or "ModalityLUTSequence" in ds
        )
        values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
        window = _stored_window(ds)
        if window is not None:
            function = str(getattr(ds, "VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
            out = _window(values, *window, function)
        elif stored_8bit and not rescaled:
            out = values  # 8-bit data without a window is shown as stored
        else:
            out = _min_max(values)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot convert DICOM file {path} to an image: {exc}") from None
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    if photometric == "MONOCHROME1":  # low values are white: invert so that bone is bright
        out = 255 - out
    return gray_to_rgb(out) if channels == 3 else out


def decode_gray(path: str | os.PathLike) -> np.ndarray:
    """One image file, fully decoded, as 8-bit grayscale at its own size (colour is converted).

    Raises DataError for a missing file, DICOM problems, and the reason Pillow gives otherwise
    (as UnreadableImage, so callers can add advice)."""
    return decode_image(path, 1)


def decode_image(path: str | os.PathLike, channels: int = 1) -> np.ndarray:
    """One image file, fully decoded, at its own size: 8-bit grayscale (h, w) for ``channels = 1``
    (colour converted), RGB (h, w, 3) for ``channels = 3`` (grayscale repeated). Errors as
    ``decode_gray``."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), not {channels!r}")
    if Path(path).suffix.lower() in DICOM_SUFFIXES:
        return decode_dicom(path, channels)
    try:
        with Image.open(path) as im:
            im.load()  # decodes everything: a truncated file fails here (verify() would pass it)
            return to_rgb_array(im) if channels == 3 else to_grayscale_array(im)
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except UnidentifiedImageError as exc:
        if has_dicom_preamble(path):
            return decode_dicom(path, channels)
        raise UnreadableImage(path, str(exc)) from None
    except Image.DecompressionBombError as exc:  # Pillow's guard against huge images (names no file)
        raise UnreadableImage(path, f"too large to decode safely ({exc})") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise UnreadableImage(path, str(exc)) from None


class UnreadableImage(DataError):
    """An image file that exists but cannot be decoded."""

    def __init__(self, path, reason: str, skip_unreadable: bool | None = None):
        self.path, self.reason, self.skip_unreadable = str(path), reason, skip_unreadable
        super().__init__(unreadable_message(path, reason, skip_unreadable))

    def __reduce__(self):  # picklable across processes with its own arguments
        return (UnreadableImage, (self.path, self.reason, self.skip_unreadable))


def unreadable_message(path, reason: str, skip_unreadable: bool | None = None) -> str:
    """The error for an undecodable image; the advice depends on the data set's skip_unreadable.

    None: the caller does not know the setting; False: advise setting it; True: it is set, so the
    file was readable when the data set was listed and has changed since."""
    head = f"cannot decode image {path}: {reason}."
    if skip_unreadable:
        return (
            f"{head} The data set has skip_unreadable = true, and this file was readable when the data set "
            "was listed, so it has changed since: replace or remove it and run again."
        )
    if skip_unreadable is None:
        return (
            f"{head} Replace or remove the file, or set skip_unreadable = true on the data set (if it has "
            "that option) to skip unreadable images."
        )
    return f"{head} Replace or remove the file, or set skip_unreadable = true on the data set to skip it."


def unreadable_reason(path: str | os.PathLike) -> str | None:
    """Why the file cannot be used as an image (after decoding it fully), or None when it can."""
    try:
        decode_gray(path)
    except UnreadableImage as exc:
        return exc.reason
    except DataError as exc:
        if str(exc).endswith(DICOM_INSTALL):  # a missing optional package is not a bad file
            raise
        return str(exc)
    return None


def decode_file(
    path: str | os.PathLike, size: tuple[int, int], skip_unreadable: bool | None = None, channels: int = 1
) -> np.ndarray:
    """Read one image file, grayscale (or RGB with ``channels = 3``), padded and resized; a clear
    error names a bad file.

    ``skip_unreadable`` is the data set's setting, so the error's advice fits it (None: unknown)."""
    try:
        image = decode_image(path, channels)
    except UnreadableImage as exc:
        raise UnreadableImage(exc.path, exc.reason, skip_unreadable) from None
    return fit_to_size(image, size)


def file_digest(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class DecodeCache:
    """Decoded images keyed by (file content, size, channels): in memory, and as .npy files on disk
    (a colour decode's file name ends in ``-rgb``; grayscale names are as they always were).

    ``hits`` and ``misses`` count lookups so tests and benchmarks can see the cache work.
    """

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = Path(directory) if directory else None
        self._memory: dict[tuple, np.ndarray] = {}
        self._digests: dict[tuple[str, float, int], str] = {}
        self.hits = 0
        self.misses = 0

    def _digest(self, path: str) -> str:
        st = os.stat(path)
        key = (os.path.abspath(path), st.st_mtime, st.st_size)
        if key not in self._digests:
            self._digests[key] = file_digest(path)
        return self._digests[key]

    def get(
        self, path: str | os.PathLike, size: tuple[int, int], skip_unreadable: bool | None = None, channels: int = 1
    ) -> np.ndarray:
        """The decoded image, (H, W) or, with ``channels = 3``, (H, W, 3); ``skip_unreadable`` (the
        data set's setting) shapes an error's advice."""
        path = str(path)
        if not os.path.exists(path):
            raise DataError(f"image file not found: {path}")
        digest = self._digest(path)
        key = (digest, tuple(size)) if channels == 1 else (digest, tuple(size), channels)
        colour = "-rgb" if channels == 3 else ""
        if key in self._memory:
            self.hits += 1
            return self._memory[key]
        disk = (
            self.directory / f"{size[0]}x{size[1]}" / f"{digest}{_decoder_tag(path)}{colour}.npy"
            if self.directory
            else None
        )
        if disk is not None and disk.exists():
            try:
                arr = np.load(disk)
                self.hits += 1
                self._memory[key] = arr
                return arr
            except (OSError, ValueError):
                pass  # a damaged cache entry is simply recomputed
        self.misses += 1
        arr = decode_file(path, size, skip_unreadable, channels)
        self._memory[key] = arr
        if disk is not None:
            disk.parent.mkdir(parents=True, exist_ok=True)
            tmp = disk.with_suffix(f".{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, arr)
            os.replace(tmp, disk)
        return arr

    def load_many(
        self, paths: Iterable[str], size: tuple[int, int], skip_unreadable: bool | None = None, channels: int = 1
    ) -> np.ndarray:
        """(N, H, W) grayscale, or (N, H, W, 3) with ``channels = 3``."""
        arrays = [self.get(p, size, skip_unreadable, channels) for p in paths]
        if not arrays:
            return np.zeros((0, *size) + ((3,) if channels == 3 else ()), dtype=np.uint8)
        return np.stack(arrays)


_SHARED: DecodeCache | None = None


def shared_decode_cache() -> DecodeCache:
    """The decode cache data set plugins load through: one per process (memory), backed by files under
    the benchbox cache (disk); a new one when the cache root moves ($BENCHBOX_CACHE)."""
    global _SHARED
    directory = cache_root() / "decoded"
    if _SHARED is None or _SHARED.directory != directory:
        _SHARED = DecodeCache(directory)
    return _SHARED
