"""`benchbox data fetch`: download the raw sources from their public homes into the data root,
with a progress bar and size verification; without a network, say what to place by hand."""

from __future__ import annotations

import shutil
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from benchbox.errors import DataError


@dataclass(frozen=True)
class Source:
    name: str
    url: str
    home: str
    layout: str
    archive_root: str  # the folder inside the archive that becomes the source directory
    target: str


COHEN_COMMIT = "0f7245db6f5aa4001ea75cf69fe6cfe091928403"  # 2020-06-05, the snapshot in docs/datasets.md
SOURCES = {
    "cohen": Source("cohen", f"https://github.com/ieee8023/covid-chestxray-dataset/archive/{COHEN_COMMIT}.zip",
                    "https://github.com/ieee8023/covid-chestxray-dataset",
                    "covid-chestxray-dataset/metadata.csv and covid-chestxray-dataset/images/",
                    f"covid-chestxray-dataset-{COHEN_COMMIT}", "covid-chestxray-dataset"),
    "kermany": Source("kermany", "https://data.mendeley.com/public-files/datasets/rscbjbr9sj/files/"
                      "f12eaf6d-6023-432f-acc9-80c9d7393433/file_downloaded",
                      "https://data.mendeley.com/datasets/rscbjbr9sj/2 (ChestXRay2017.zip)",
                      "chest_xray/{train,test}/{NORMAL,PNEUMONIA}/*.jpeg", "chest_xray", "chest_xray"),
}


def download(url: str, dest: Path, progress=None, timeout: float = 30) -> None:
    """Stream ``url`` to ``dest`` via a .part file; verify the size the server announced."""
    part = dest.with_suffix(dest.suffix + ".part")
    with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        done = 0
        while chunk := response.read(1 << 20):
            out.write(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    if total and part.stat().st_size != total:
        part.unlink()
        raise OSError(f"incomplete download: {done} of {total} bytes")
    part.replace(dest)


def fetch(name: str, root: Path, progress=None) -> Path:
    if name not in SOURCES:
        raise DataError(f"unknown source {name!r}; choose from {', '.join(SOURCES)}")
    src = SOURCES[name]
    root.mkdir(parents=True, exist_ok=True)
    archive = root / f"{name}.zip"
    try:
        if not archive.exists():
            download(src.url, archive, progress)
        with zipfile.ZipFile(archive) as z:
            bad = z.testzip()
            if bad:
                raise OSError(f"corrupt archive member {bad}")
            tmp = root / f".{name}-extract"
            shutil.rmtree(tmp, ignore_errors=True)
            z.extractall(tmp)
    except (OSError, zipfile.BadZipFile) as exc:
        archive.unlink(missing_ok=True)
        raise DataError(
            f"cannot download {name} ({exc}).\n    It needs: {src.url}\n    (home: {src.home})\n"
            f"    To place it by hand, put {src.layout} under {root} — or pass --data-dir / set "
            f"BENCHBOX_DATA to a folder that already holds that layout.") from None
    found = next((p for p in tmp.rglob(src.archive_root) if p.is_dir()), None)
    if found is None:
        raise DataError(f"{archive}: no {src.archive_root}/ folder inside; place {src.layout} under {root} by hand")
    target = root / src.target
    if target.exists():
        shutil.rmtree(target)
    found.rename(target)
    shutil.rmtree(tmp, ignore_errors=True)
    archive.unlink()
    return target
