"""The study's raw sources as :class:`benchbox.contracts.DataSource` objects: `benchbox data fetch`
downloads them with pooch, `benchbox data verify` checks a data root against them.

How a download is trusted:

- the archive is downloaded by pooch to a temporary file inside ``<root>/.benchbox-download-<name>/``
  and moved to its final name only when complete (and, where a SHA-256 is pinned, only when it
  matches); a broken connection is retried, and a later call starts the download again;
- where the archive's bytes are stable its SHA-256 is pinned (``known_hash``); a mismatch is a
  DataError naming both hashes, and nothing is extracted;
- the archive is unpacked into a temporary folder inside the root, every member checked to stay
  inside it (zip slip), the source folder found by its layout, its content compared with the
  shipped per-file manifest (where one is shipped), and only then renamed into place;
- on any failure the data root is left as it was.

Neither of the study's archives has stable bytes (GitHub generates the archive of a commit on
request; Mendeley's download is not guaranteed byte-identical), so both rely on the content
manifest (``manifest-<name>.json`` beside this file, written by ``tools/make_data_manifest.py``).

A source can be pointed elsewhere (a mirror, a test server) with ``dataclasses.replace(COHEN,
url=..., known_hash=...)`` or, for the command line, ``BENCHBOX_<NAME>_URL`` and
``BENCHBOX_<NAME>_SHA256`` (e.g. ``BENCHBOX_COHEN_URL``).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
import zipfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pooch

from benchbox.contracts import DataSource, VerifyReport
from benchbox.errors import DataError
from benchbox_xray.manifest import Manifest, compare, load_manifest
from benchbox_xray.sources import COHEN_DIR, KERMANY_DIR

Progress = Callable[[int, "int | None"], None]
HERE = Path(__file__).resolve().parent
SKIP_DIRS = {"__MACOSX"}


class _ProgressAdapter:
    """The progress-bar object pooch's HTTPDownloader drives (``total``, ``update``, ``reset``,
    ``close``), turned into benchbox's ``progress(done, total)`` callback."""

    def __init__(self, callback: Progress):
        self.callback = callback
        self.done = 0
        self._total: int | None = None

    @property
    def total(self) -> int | None:
        return self._total

    @total.setter
    def total(self, value) -> None:  # set by pooch at the start of every attempt
        self._total = int(value) or None
        self.done = 0
        self.callback(0, self._total)

    def update(self, n: int) -> None:
        self.done += int(n)
        self.callback(min(self.done, self._total) if self._total else self.done, self._total)

    def reset(self) -> None:
        self.done = 0

    def close(self) -> None:
        pass


def _unsafe_member(name: str) -> bool:
    """True for an archive member that would land outside the folder it is extracted into."""
    parts = re.split(r"[\\/]", name)
    return name.startswith(("/", "\\")) or bool(re.match(r"^[A-Za-z]:", name)) or ".." in parts or "\x00" in name


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    text = text if len(text) <= 300 else text[:300] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _listing(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")


@dataclass(frozen=True, kw_only=True)
class ArchiveSource(DataSource):
    """A source published as one zip archive holding a folder with a known layout."""

    name: str
    description: str
    home: str
    layout: str  # for people: what to place under the data root by hand
    url: str
    folder: str  # the source's folder under the data root
    required: tuple[str, ...]  # relative to ``folder``; a trailing "/" marks a non-empty folder
    archive_name: str  # file name of the download
    known_hash: str | None = None  # "sha256:<hex>" (or bare hex) where the bytes are stable; else None
    manifest_path: Path | None = None  # the shipped per-file manifest (content check)
    version: str = ""  # what the manifest pins, e.g. a commit
    retries: int = 3
    timeout: float = 60.0

    # -- where from -------------------------------------------------------------------------
    def resolved(self) -> tuple[str, str | None]:
        """(url, known_hash), with ``BENCHBOX_<NAME>_URL`` / ``BENCHBOX_<NAME>_SHA256`` applied."""
        key = re.sub(r"\W", "_", self.name).upper()
        url = os.environ.get(f"BENCHBOX_{key}_URL") or self.url
        known = os.environ.get(f"BENCHBOX_{key}_SHA256") or self.known_hash
        if known and ":" not in known:
            known = f"sha256:{known}"
        return url, known

    def load_manifest(self) -> Manifest:
        if self.manifest_path is None:
            return Manifest(self.name, self.folder)
        return load_manifest(self.manifest_path, self.name, self.folder)

    # -- layout -----------------------------------------------------------------------------
    def layout_problems(self, base: Path) -> list[str]:
        """The required entries (relative to ``base``) that are absent; a folder must hold something."""
        absent = []
        for rel in self.required:
            p = base / rel.rstrip("/")
            if rel.endswith("/"):
                if not p.is_dir() or not any(p.iterdir()):
                    absent.append(rel)
            elif not p.is_file():
                absent.append(rel)
        return absent

    def locate(self, root: Path) -> Path:
        """The source folder under ``root`` (``<folder>``, or ``<folder>/<folder>`` as Kaggle nests it)."""
        first = Path(root) / self.folder
        for candidate in (first, first / self.folder):
            if candidate.is_dir() and not self.layout_problems(candidate):
                return candidate
        return first

    def _find_in(self, tree: Path, depth: int = 4) -> Path | None:
        """The shallowest folder under ``tree`` with this source's layout."""
        queue = deque([(tree, 0)])
        while queue:
            d, level = queue.popleft()
            if not self.layout_problems(d):
                return d
            if level < depth:
                queue.extend(
                    (c, level + 1)
                    for c in sorted(d.iterdir())
                    if c.is_dir() and not c.is_symlink() and c.name not in SKIP_DIRS
                )
        return None

    # -- fetch ------------------------------------------------------------------------------
    def fetch(self, root: Path, progress: Progress | None = None) -> Path:
        """Download, check and unpack into ``root``; return the source's folder. Raise DataError,
        leaving ``root`` as it was."""
        root = Path(root)
        url, known_hash = self.resolved()
        root_existed = root.exists()
        download_dir = root / f".benchbox-download-{self.name}"
        try:
            self._clear_leftovers(root, download_dir)
            archive = self._download(url, known_hash, root, download_dir, progress)
            try:
                return self._install(archive, url, root)
            finally:
                archive.unlink(missing_ok=True)
        finally:
            for d in (download_dir, root if not root_existed else None):
                if d is not None and d.is_dir() and not any(d.iterdir()):
                    d.rmdir()

    def _clear_leftovers(self, root: Path, download_dir: Path) -> None:
        """Remove what a killed earlier call left: pooch's temporary files, extraction folders."""
        if download_dir.is_dir():
            for p in download_dir.iterdir():
                if p.name != self.archive_name:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
        if root.is_dir():
            for pattern in (f".{self.name}-extract-*", f".{self.name}-old-*"):
                for p in root.glob(pattern):
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink()

    def _cannot_download(self, url: str, root: Path, why: str) -> DataError:
        return DataError(
            f"cannot download {self.name} ({why}).\n    It needs: {url}\n    (home: {self.home})\n"
            f"    To place it by hand, put {self.layout} under {root} — or pass --data-dir DIR / set "
            f"BENCHBOX_DATA to a folder that already holds that layout.\n"
            f"    Nothing was kept; running the fetch again starts the download again."
        )

    def _download(
        self, url: str, known_hash: str | None, root: Path, download_dir: Path, progress: Progress | None
    ) -> Path:
        import requests

        store = pooch.create(
            path=download_dir,
            base_url="",
            registry={self.archive_name: known_hash},
            urls={self.archive_name: url},
            retry_if_failed=self.retries,
        )
        downloader = pooch.HTTPDownloader(
            progressbar=_ProgressAdapter(progress) if progress else False, timeout=self.timeout, chunk_size=1 << 20
        )
        logger = pooch.get_logger()
        level = logger.level
        logger.setLevel("WARNING")  # pooch's "Downloading ..." lines would interleave with the caller's progress bar
        try:
            return Path(store.fetch(self.archive_name, downloader=downloader))
        except ValueError as exc:  # pooch: the hash does not match (after the retries)
            m = re.search(r"expected (\S+) but got (\S+?)\.(?:\s|$)", str(exc))
            if not m:
                raise self._cannot_download(url, root, _short(exc)) from None
            expected, actual = m[1].split(":")[-1], m[2]
            raise DataError(
                f"{self.name}: the archive downloaded from {url} does not match its pinned SHA-256.\n"
                f"    expected: {expected}\n    actual:   {actual}\n"
                f"    Nothing was extracted and {root} is unchanged. The file on the server is corrupted or "
                f"not the pinned version: try again later, or place {self.layout} under {root} by hand "
                f"(home: {self.home})."
            ) from None
        except (requests.exceptions.RequestException, OSError) as exc:
            raise self._cannot_download(url, root, _short(exc)) from None
        finally:
            logger.setLevel(level)

    def _install(self, archive: Path, url: str, root: Path) -> Path:
        nothing = f"nothing was extracted and {root} is unchanged"
        try:
            zf = zipfile.ZipFile(archive)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(
                f"{self.name}: the download from {url} is not a readable zip archive ({_short(exc)}); "
                f"{nothing}. Try again, or place {self.layout} under {root} by hand."
            ) from None
        with zf:
            unsafe = [m.filename for m in zf.infolist() if _unsafe_member(m.filename)]
            if unsafe:
                raise DataError(
                    f"{self.name}: the archive from {url} has member(s) that would be written outside "
                    f"the folder it is unpacked into: {_listing(unsafe)}. Refused; {nothing}."
                )
            tmp = Path(tempfile.mkdtemp(prefix=f".{self.name}-extract-", dir=root))
            try:
                try:
                    for member in zf.infolist():
                        dest = (tmp / member.filename).resolve()
                        if not dest.is_relative_to(tmp.resolve()):  # belt and braces after _unsafe_member
                            raise DataError(
                                f"{self.name}: archive member {member.filename!r} escapes the "
                                f"target folder. Refused; {nothing}."
                            )
                        zf.extract(member, tmp)
                except (zipfile.BadZipFile, OSError, EOFError) as exc:
                    raise DataError(
                        f"{self.name}: cannot unpack the archive from {url} ({_short(exc)}); {nothing}."
                    ) from None
                base = self._find_in(tmp)
                if base is None:
                    raise DataError(
                        f"{self.name}: the archive from {url} holds no folder with "
                        f"{', '.join(self.required)}; {nothing}. Place {self.layout} under {root} by hand."
                    )
                manifest = self.load_manifest()
                if manifest.files:
                    found = compare(base, manifest)
                    if found.missing or found.changed:
                        raise DataError(
                            f"{self.name}: the archive from {url} does not hold the pinned content "
                            f"({manifest.version or manifest.path}): {len(found.missing)} file(s) missing "
                            f"({_listing(found.missing)}), {len(found.changed)} changed ({_listing(found.changed)}); "
                            f"{nothing}."
                        )
                return self._swap_into_place(base, root)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

    def _swap_into_place(self, base: Path, root: Path) -> Path:
        """Rename the checked folder to ``root/<folder>`` (same file system: atomic); an existing
        folder is moved aside first and deleted only once the new one is in place."""
        target = root / self.folder
        old = None
        if target.exists() or target.is_symlink():
            old = root / f".{self.name}-old-{uuid.uuid4().hex[:8]}"
            target.rename(old)
        try:
            base.rename(target)
        except OSError as exc:
            if old is not None:
                old.rename(target)
            raise DataError(
                f"{self.name}: cannot move the unpacked folder to {target} ({_short(exc)}); {root} is unchanged."
            ) from None
        if old is not None:
            old.unlink() if old.is_symlink() else shutil.rmtree(old, ignore_errors=True)
        return target

    # -- verify -----------------------------------------------------------------------------
    def verify(self, root: Path) -> VerifyReport:
        """Check the layout, then (where a manifest is shipped) every file's SHA-256. Names in the
        report are relative to ``root``."""
        root = Path(root)
        report = VerifyReport(self.name, str(root))
        base = self.locate(root)
        if not base.is_dir():
            report.missing.append(f"{self.folder}/")
            report.notes.append(
                f"{self.name}: {base} does not exist. Run `benchbox data fetch {self.name}` or "
                f"place {self.layout} under {root} by hand (home: {self.home})."
            )
            return report
        prefix = base.relative_to(root).as_posix()
        missing = [f"{prefix}/{rel}" for rel in self.layout_problems(base)]
        manifest = self.load_manifest()
        if not manifest.files:
            where = manifest.path.name if manifest.path else "no manifest file"
            state = "lists no files" if manifest.path and manifest.path.exists() else "is absent"
            report.notes.append(
                f"{self.name}: no manifest is shipped for this source ({where} {state}), so file contents were NOT "
                f"verified; only the layout was checked ({', '.join(self.required)}). A maintainer with the "
                f"original data generates it with `python tools/make_data_manifest.py {self.name} --data-dir DIR`."
            )
        else:
            found = compare(base, manifest)
            report.checked = found.checked
            missing += [f"{prefix}/{rel}" for rel in found.missing]
            report.changed = [f"{prefix}/{rel}" for rel in found.changed]
            report.extra = [f"{prefix}/{rel}" for rel in found.extra]
            report.notes.append(
                f"{self.name}: {found.checked} of {len(manifest.files)} file(s) hashed against the "
                f"manifest ({manifest.version or manifest.path})"
            )
        report.missing = list(dict.fromkeys(missing))
        return report


def render_verify(report: VerifyReport, limit: int = 20) -> str:
    """A plain-text account of one VerifyReport (for `benchbox data verify`)."""
    if not report.ok:
        parts = [
            f"{len(report.missing)} missing" if report.missing else "",
            f"{len(report.changed)} changed" if report.changed else "",
        ]
        status = "FAILED: " + ", ".join(p for p in parts if p)
    elif report.checked:
        status = f"OK: {report.checked} file(s) match the manifest"
    else:
        status = "layout OK, contents NOT verified (no manifest)"
    if report.extra:
        status += f"; {len(report.extra)} extra file(s)"
    lines = [f"{report.source} ({report.root}): {status}"]
    for label, names in (("missing", report.missing), ("changed", report.changed), ("extra", report.extra)):
        for name in names[:limit]:
            lines.append(f"  {label}: {name}")
        if len(names) > limit:
            lines.append(f"  {label}: ... and {len(names) - limit} more")
    lines += [f"  note: {n}" for n in report.notes]
    return "\n".join(lines)


COHEN_COMMIT = "0f7245db6f5aa4001ea75cf69fe6cfe091928403"  # 2020-06-05, the snapshot in docs/datasets.md

COHEN = ArchiveSource(
    name="cohen",
    description=f"Cohen et al., COVID-19 image data collection (GitHub, commit {COHEN_COMMIT[:8]}, 2020-06-05)",
    home="https://github.com/ieee8023/covid-chestxray-dataset",
    layout=f"{COHEN_DIR}/metadata.csv and {COHEN_DIR}/images/",
    url=f"https://github.com/ieee8023/covid-chestxray-dataset/archive/{COHEN_COMMIT}.zip",
    folder=COHEN_DIR,
    required=("metadata.csv", "images/"),
    archive_name=f"covid-chestxray-dataset-{COHEN_COMMIT[:8]}.zip",
    known_hash=None,  # GitHub generates the archive on request: its bytes are not stable; the manifest checks content
    manifest_path=HERE / "manifest-cohen.json",
    version=f"github.com/ieee8023/covid-chestxray-dataset at commit {COHEN_COMMIT}",
)

KERMANY = ArchiveSource(
    name="kermany",
    description="Kermany et al. 2018, chest_xray (Mendeley Data rscbjbr9sj v2, ChestXRay2017.zip, about 1.2 GB)",
    home="https://data.mendeley.com/datasets/rscbjbr9sj/2 (ChestXRay2017.zip)",
    layout=f"{KERMANY_DIR}/{{train,test}}/{{NORMAL,PNEUMONIA}}/*.jpeg",
    url="https://data.mendeley.com/public-files/datasets/rscbjbr9sj/files/"
    "f12eaf6d-6023-432f-acc9-80c9d7393433/file_downloaded",
    folder=KERMANY_DIR,
    required=("train/NORMAL/", "train/PNEUMONIA/", "test/NORMAL/", "test/PNEUMONIA/"),
    archive_name="ChestXRay2017.zip",
    known_hash=None,  # Mendeley does not promise byte-stable downloads; the manifest checks content
    manifest_path=HERE / "manifest-kermany.json",
    version="Mendeley Data rscbjbr9sj version 2 (ChestXRay2017.zip)",
)

SOURCES: dict[str, ArchiveSource] = {s.name: s for s in (COHEN, KERMANY)}


def data_sources() -> list[DataSource]:
    """What the ``benchbox_data_sources`` hook returns."""
    return list(SOURCES.values())


def fetch(name: str, root: Path, progress: Progress | None = None) -> Path:
    """``SOURCES[name].fetch(root, progress)`` (kept for callers that name a source)."""
    if name not in SOURCES:
        raise DataError(f"unknown source {name!r}; choose from {', '.join(SOURCES)}")
    return SOURCES[name].fetch(Path(root), progress)


def verify(name: str, root: Path) -> VerifyReport:
    if name not in SOURCES:
        raise DataError(f"unknown source {name!r}; choose from {', '.join(SOURCES)}")
    return SOURCES[name].verify(Path(root))
