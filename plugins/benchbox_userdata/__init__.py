"""Data sets a user points at, with no code: ``folder`` (one sub-folder per class) and ``csv`` (a
table of paths and labels). Both read png/jpg/bmp/tiff and DICOM (through pydicom, an optional
extra: ``pip install 'benchbox[dicom]'``), take patient groups from a regex on the path (folder) or
a patient column (csv), and report what a user must know (no patient ids, skipped files, empty
class folders) as warnings. ``color = "rgb"`` loads images as RGB (N, H, W, 3) instead of grayscale
(the default, ``"gray"``). See docs/your-study.md.
"""

from __future__ import annotations

from benchbox import hookimpl
from benchbox_userdata.csvset import CsvDataset
from benchbox_userdata.folder import FolderDataset

__all__ = ["CsvDataset", "FolderDataset"]


@hookimpl
def benchbox_datasets():
    return [FolderDataset(), CsvDataset()]
