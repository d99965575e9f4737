"""The run store: one directory per run, holding the truth from which every view is computed.

    runs/<suite>-<timestamp>/
        manifest.json          suite as run, versions, hardware, seed, data fingerprints, status
        suite.toml             the suite file, verbatim
        splits/<data>.json     fold assignment per sample id
        folds/<data>__<backbone>__fold<NN>.json   one FoldRecord per finished fold; the manifest's
                               record_digests lists each one's sha256, written as the fold finished
        failed/...             folds that failed, with the error (retried by the next run)
        <folder>/<data>__<backbone>__fold<NN>.npz   arrays a fold inspector kept of the fold (e.g. the
                               Grad-CAM maps in explanations/), written before its record
        benchbox.log           tracebacks of plugin failures
        report.md, summary.csv, ...                views, re-rendered by `benchbox report`

Every file is written atomically (temporary file, fsync, rename) with the usual umask
permissions, so an interrupted run never leaves a half-written record and others can read shared
results. Each record carries the digest of the suite that produced it; a lock file keeps a second
process out of a run directory that is being written.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import socket
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from benchbox.contracts import FoldArtefacts
from benchbox.errors import StoreError
from benchbox.execute.records import CellKey, FoldRecord, data_index, legacy_aliases


def split_fingerprint(ids, folds, protocol: str) -> str:
    """``sha256:`` + a digest of a split: the protocol label, then one ``id<TAB>fold`` line per sample,
    sorted by id (repeated CV: ``id<TAB>fold,fold,...``, one fold per repeat; ``folds`` then has one row
    per repeat). The same samples in the same folds give the same digest whatever their order, machine
    or framework; the short form (first 12 hex digits) is what tables show."""
    ids = [str(i) for i in ids]
    folds = np.asarray(folds)
    if folds.ndim == 2:  # repeated CV: one row per repeat -> one "f0,f1,..." per sample
        if folds.shape[1] != len(ids):
            raise ValueError(f"a split of {len(ids)} ids has rows of {folds.shape[1]} fold numbers; each id needs one")
        folds = [",".join(str(int(f)) for f in col) for col in folds.T]
    elif folds.ndim == 1:
        folds = [str(int(f)) for f in folds]
    else:
        raise ValueError(f"a split's folds must be a list of fold numbers (or one list per repeat), got {folds.shape}")
    if len(ids) != len(folds):
        raise ValueError(f"a split of {len(ids)} ids has {len(folds)} fold numbers; each id needs one fold")
    h = hashlib.sha256(f"benchbox-split/1\n{protocol}\n".encode())
    for i, f in sorted(zip(ids, folds)):
        h.update(f"{i}\t{f}\n".encode())
    return "sha256:" + h.hexdigest()


MANIFEST = "manifest.json"
FORMAT = "benchbox-run/2"
READABLE_FORMATS = ("benchbox-run/1", FORMAT)
LOCK = ".lock"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def arrays_npz(arrays: Mapping[str, Any]) -> bytes:
    """Named arrays as a compressed .npz archive (no pickles: strings are unicode arrays)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def write_atomic(path: Path, text: str | bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(
            fd, "wb" if isinstance(text, bytes) else "w", **({} if isinstance(text, bytes) else {"encoding": "utf-8"})
        ) as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_json(path: Path):
    """The JSON value of a file. Raises OSError or ValueError (never RecursionError: JSON nested deeper
    than Python's parser goes is a damaged file like any other)."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply to be a file benchbox wrote") from None


def read_json_object(path: Path) -> dict | None:
    """A JSON object from a file, or None when the file is missing, unreadable, not JSON or not an
    object (a run directory's files may have been damaged or edited by hand)."""
    try:
        data = load_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def json_text(obj: Any) -> str:
    """The text ``write_json`` writes."""
    return json.dumps(_clean(obj), indent=1, default=_jsonable, allow_nan=False)


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json_text(obj))


#: the manifest key listing ``{"folds/<file>.json": "sha256:<hex>"}``, one entry per fold record
DIGESTS = "record_digests"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def _clean(obj):
    """NaN and infinity are not JSON: stored as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _jsonable(obj):
    if hasattr(obj, "tolist"):
        return _clean(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in a record")


class RunLocked(StoreError):
    """Another live process is writing this run directory."""


class RunStore:
    """Read and write one run directory."""

    def __init__(self, path):
        self.path = Path(path)

    # --- manifest -------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def create(self, manifest: dict, suite_text: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path / "suite.toml", suite_text)
        write_json(self.manifest_path, {"format": FORMAT, **manifest})

    def suite_edited(self, manifest: dict) -> str | None:
        """A note when suite.toml in the run directory no longer says what the run ran (edited by hand
        after the run started): the run uses the suite the manifest stored, never the edited file."""
        path = self.path / "suite.toml"
        stored = manifest.get("suite_as_run")
        if not isinstance(stored, dict) or not path.exists():
            return None
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib
        try:
            now = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            now = None
        if now == json.loads(json.dumps(stored)):
            return None
        return (
            f"{path} was edited after the run started (it no longer matches the suite in manifest.json): "
            "this run uses the suite it started with and ignores the edit; to run the edited suite, pass "
            "it to `benchbox run` as a new suite file"
        )

    def manifest(self) -> dict:
        if not self.path.is_dir():
            raise StoreError(f"{self.path}: no such run directory")
        if not self.manifest_path.exists():
            raise StoreError(
                f"{self.path}: not a benchbox run (no {MANIFEST}); pass a directory written by `benchbox run`"
            )
        try:
            data = load_json(self.manifest_path)
        except (OSError, ValueError) as exc:
            raise StoreError(
                f"{self.manifest_path}: unreadable manifest ({exc}). The fold records in {self.path / 'folds'} "
                "are kept; restore the manifest from a copy, or start a new run (--new, or another --run-dir)"
            ) from None
        if not isinstance(data, dict) or data.get("format") not in READABLE_FORMATS:
            fmt = data.get("format") if isinstance(data, dict) else None
            raise StoreError(f"{self.manifest_path}: not a benchbox run manifest (format {fmt!r})")
        return data

    def update_manifest(self, **fields) -> dict:
        data = self.manifest()
        data.update(fields)
        write_json(self.manifest_path, data)
        return data

    def has_records(self) -> bool:
        return any((self.path / "folds").glob("*.json"))

    # --- lock -----------------------------------------------------------------------------
    def lock(self) -> None:
        """Take the run directory for this process; refuse when a live process holds it.

        The lock file appears with its content complete (written to a temporary file, then
        hard-linked into place, which fails if a lock exists), so another process never reads a
        half-written lock and mistakes its holder for dead."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the run directory {self.path}: {exc.strerror or exc}; choose another "
                "--run-dir or output_dir"
            ) from None
        lock = self.path / LOCK
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f"{LOCK}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            os.chmod(tmp, 0o666 & ~_umask())
            for _ in range(2):
                try:
                    _link_or_create(tmp, lock, me)
                    return
                except FileExistsError:
                    holder = self._holder(lock)
                    if holder is not None and _alive(holder):
                        raise RunLocked(
                            f"{self.path} is being written by process {holder.get('pid')} on "
                            f"{holder.get('host')} (since {holder.get('since')}); wait for it to finish, "
                            f"or use another --run-dir. If that process is gone, delete {lock}"
                        ) from None
                    lock.unlink(missing_ok=True)  # its holder is dead (or the lock is damaged): break it
        finally:
            os.unlink(tmp)
        raise RunLocked(f"{self.path}: could not take the lock {lock}; delete it if no benchbox is running")

    def remove_temporary(self) -> list[Path]:
        """Delete the temporary files of writes a killed process left half done (call with the lock held):
        benchbox's own (``.NAME.XXXX.tmp``, ``plots/*.tmp.png``) and other tools' ``.tmp-*`` files, which
        would otherwise be read as damaged fold records by every later run and report."""
        leftovers = [p for p in self.path.rglob(".*.tmp") if p.name != LOCK] + list(self.path.glob("plots/*.tmp.png"))
        leftovers += [p for p in self.path.rglob(".tmp-*") if p.is_file() and not p.is_symlink()]
        for p in leftovers:
            p.unlink(missing_ok=True)
        return leftovers

    def unlock(self) -> None:
        lock = self.path / LOCK
        holder = self._holder(lock)
        if holder is not None and holder.get("pid") == os.getpid():
            lock.unlink(missing_ok=True)

    @staticmethod
    def _holder(lock: Path) -> dict | None:
        return read_json_object(lock)

    # --- splits ---------------------------------------------------------------------------
    def split_path(self, name: str) -> Path:
        return self.path / "splits" / f"{name}.json"

    def write_split(self, name: str, ids, folds, protocol: str) -> None:
        ids, folds = [str(i) for i in ids], np.asarray(folds, dtype=np.int64).tolist()  # (r, n): a row per repeat
        write_json(
            self.split_path(name),
            {
                "dataset": name,
                "protocol": protocol,
                "fingerprint": split_fingerprint(ids, folds, protocol),
                "ids": ids,
                "fold": folds,
            },
        )

    def split_fingerprint(self, name: str) -> str:
        """The stored split's fingerprint (computed from its ids, folds and protocol, never read back
        from the file, so an edited assignment shows); "" when the run stores no split of ``name``."""
        data = self.read_split(name)
        if not data:
            return ""
        return split_fingerprint(data["ids"], data["fold"], str(data.get("protocol") or ""))

    def read_split(self, name: str) -> dict | None:
        p = self.split_path(name)
        if not p.exists():
            return None
        data = read_json_object(p)
        if data is None or not isinstance(data.get("ids"), list) or not isinstance(data.get("fold"), list):
            raise StoreError(
                f"{p} is damaged (not the fold assignment benchbox wrote), so the stored folds cannot be "
                "checked against the suite; delete that file to have it drawn again from the suite's "
                "seed, or start a new run (--new, or another --run-dir)"
            )
        return data

    # --- fold records ---------------------------------------------------------------------
    def record_path(self, cell: CellKey, fold: int) -> Path:
        return self.path / "folds" / f"{cell.slug}__fold{fold:02d}.json"

    def has_record(self, cell: CellKey, fold: int, digest: str | None = None) -> bool:
        """Whether a whole, readable record of this fold exists (of this suite digest, if given)."""
        data = read_json_object(self.record_path(cell, fold))
        if data is None:
            return False  # missing or damaged: (re)done
        try:
            _validate(FoldRecord.from_json(data), *_bounds(self.manifest() if self.manifest_path.exists() else {}))
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError, StoreError):
            return False  # a record the views would skip (NaN, wrong shape, bad labels) is redone too
        return digest is None or data.get("suite_digest") == digest

    def foreign_records(self, digest: str) -> list[Path]:
        """Records written by another suite (or an edited one): they must not be adopted."""
        out = []
        for p in sorted((self.path / "folds").glob("*.json")):
            data = read_json_object(p)
            if data is not None and data.get("suite_digest") != digest:
                out.append(p)
        return out

    def write_record(self, record: FoldRecord, artefacts: Mapping[str, FoldArtefacts] | None = None) -> Path:
        """Write a finished fold's record and list its sha256 in the manifest (``record_digests``); before it,
        the arrays its fold inspectors kept (``artefacts``, by inspector name), each file written atomically.

        The digest goes into the manifest first, then the record appears (both atomic writes, by the one
        process that holds the run's lock): a process killed between the two leaves a digest without its
        record, and the next run redoes that fold and lists the new digest; never a record without one."""
        self._write_artefacts(record, artefacts or {})
        p = self.record_path(record.cell, record.fold)
        text = json_text(record.to_json()).encode("utf-8")
        if self.manifest_path.exists():
            manifest = self.manifest()
            digests = dict(manifest.get(DIGESTS) or {})
            digests[self.member_name(p)] = sha256_digest(text)
            manifest[DIGESTS] = digests
            write_json(self.manifest_path, manifest)
        write_atomic(p, text)
        return p

    def member_name(self, path: Path) -> str:
        """A file's name relative to the run directory, with forward slashes (as manifests and bundles list it)."""
        return Path(path).relative_to(self.path).as_posix()

    def artefact_path(self, folder: str, cell: CellKey, fold: int) -> Path:
        """Where a fold inspector's arrays of one fold are stored: ``FOLDER/<cell>__foldNN.npz``."""
        return self.path / folder / f"{cell.slug}__fold{fold:02d}.npz"

    def _write_artefacts(self, record: FoldRecord, artefacts: Mapping[str, FoldArtefacts]) -> None:
        """Each fold inspector's arrays, written atomically *before* the record, so a stored record has its
        files; its summary in the record (``info[NAME]``) gets the file's path as ``file``. An inspector
        that kept no arrays this time leaves no stale file of an earlier try of the fold."""
        for name, kept in artefacts.items():
            if kept.log:
                self.log(f"{record.cell} fold {record.fold}: {kept.log}")
            if not kept.folder:
                continue
            path = self.artefact_path(kept.folder, record.cell, record.fold)
            if kept.arrays is None:
                path.unlink(missing_ok=True)
                continue
            write_atomic(path, arrays_npz(kept.arrays))
            summary = record.info.get(name) if isinstance(record.info.get(name), dict) else dict(kept.summary)
            record.info = {**record.info, name: {**summary, "file": str(path.relative_to(self.path))}}

    def failure_path(self, cell: CellKey, fold: int) -> Path:
        return self.path / "failed" / f"{cell.slug}__fold{fold:02d}.json"

    def write_failure(self, cell: CellKey, fold: int, error: str) -> None:
        """A unit that failed: kept with its error; rerunning the suite retries it."""
        write_json(
            self.failure_path(cell, fold),
            {
                "dataset": cell.dataset,
                "probe": cell.probe,
                "backbone": cell.backbone,
                "fold": fold,
                "cell": str(cell),
                "error": error,
                "failed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )

    def clear_failure(self, cell: CellKey, fold: int) -> None:
        self.failure_path(cell, fold).unlink(missing_ok=True)

    def read_failures(self) -> list[dict]:
        out = []
        for p in sorted((self.path / "failed").glob("*.json")):
            data = read_json_object(p)
            if data is not None:
                out.append(data)
        return out

    def log(self, text: str) -> Path:
        """Append to the run's log (tracebacks a user does not need on screen)."""
        p = self.path / "benchbox.log"
        self.path.mkdir(parents=True, exist_ok=True)
        with open(p, "a", encoding="utf-8") as f:
            f.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n{text.rstrip()}\n")
        return p

    def read_records(self, manifest: dict | None = None) -> tuple[list[FoldRecord], list[str]]:
        """All readable, valid fold records of this run's suite, and a message for every one skipped
        (the rest still count). A record whose suite digest differs from the manifest's was made by
        another (or an edited) suite: it is skipped too, never reported as this run's."""
        manifest = manifest if manifest is not None else self.manifest()
        aliases = legacy_aliases(manifest)
        digest = manifest.get("suite_digest") if manifest.get("format") == FORMAT else None
        records, problems = [], []
        bounds = _bounds(manifest)
        for p in sorted((self.path / "folds").glob("*.json")):
            try:
                data = load_json(p)
                if not isinstance(data, dict):
                    raise ValueError(f"a JSON {type(data).__name__}, not a record")
                rec = FoldRecord.from_json(data, aliases)
                _validate(rec, *bounds)
            except (OSError, ValueError, TypeError, KeyError, AttributeError, OverflowError, StoreError) as exc:
                problems.append(
                    f"{p}: skipped a damaged fold record ({exc}); rerun `benchbox run` on the suite to redo it"
                )
                continue
            if digest and rec.suite_digest != digest:
                problems.append(
                    f"{p}: skipped a fold record of another suite (digest {rec.suite_digest or 'none'}, "
                    f"this run's is {digest}); it was copied in or left by an edited suite"
                )
                continue
            records.append(rec)
        return records, problems


def _bounds(manifest: dict) -> tuple[int | None, dict]:
    """What the manifest allows a record: the number of fold units per cell (the folds, and a refit
    model's fold number), and each data set's classes."""
    protocol = manifest.get("protocol") or {}
    counts = [protocol.get("k")] + [c.get("folds") for c in manifest.get("cells") or [] if isinstance(c, dict)]
    counts = [int(n) for n in counts if isinstance(n, int) and not isinstance(n, bool) and n > 0]
    units = max(counts) + 1 if counts else None  # a cross-dataset refit model is stored as fold k
    classes = {key: list(meta.get("classes") or []) for key, meta in data_index(manifest).items()}
    return units, classes


def _validate(rec: FoldRecord, units: int | None = None, classes: dict | None = None) -> None:
    """Refuse a record no run could have written: wrong shapes, non-finite probabilities, labels
    outside the class list, a fold number outside the protocol's (``units``) or classes that are not
    its data set's (``classes``: data key -> the manifest's class list)."""
    if rec.fold < 0 or (units is not None and rec.fold >= units):
        allowed = f"0-{units - 1}" if units is not None else "0 or more"
        raise ValueError(f"fold number {rec.fold} is impossible (this run's protocol has folds {allowed})")
    known = (classes or {}).get(rec.cell.data)
    if known and rec.classes and set(rec.classes) - set(known):
        raise ValueError(f"classes {sorted(set(rec.classes) - set(known))} are not the data set's ({known})")
    p = rec.probabilities
    if p.ndim != 2 or p.shape[0] != len(rec.y_true):
        raise ValueError(f"probabilities of shape {p.shape} for {len(rec.y_true)} test images")
    if rec.classes and p.shape[1] != len(rec.classes):
        raise ValueError(f"{p.shape[1]} probability columns for {len(rec.classes)} classes")
    if not np.isfinite(p).all():
        raise ValueError("non-finite probabilities")
    if len(rec.y_true) and (rec.y_true.min() < 0 or rec.y_true.max() >= p.shape[1]):
        raise ValueError("true labels outside the class list")


def _link_or_create(tmp: str, lock: Path, content: dict) -> None:
    """Put the lock in place whole; raise FileExistsError if one exists."""
    try:
        os.link(tmp, lock)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: exclusive create, then write
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        with os.fdopen(fd, "w") as f:
            json.dump(content, f)


def _alive(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # cannot tell on another machine: assume it is alive
    try:
        os.kill(int(holder.get("pid", -1)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError):
        return True
    return True


def find_resumable(output_dir: Path, suite_name: str, digest: str) -> Path | None:
    """The newest unfinished run of the same suite content, if any."""
    return _newest_unfinished(
        output_dir, suite_name, lambda m: m.get("format") == FORMAT and m.get("suite_digest") == digest
    )


def unfinished_of_other_content(output_dir: Path, suite_name: str, digest: str) -> Path | None:
    """The newest unfinished run of the same suite *name* but other content (the suite was edited)."""
    return _newest_unfinished(
        output_dir, suite_name, lambda m: m.get("suite") == suite_name and m.get("suite_digest") != digest
    )


def _newest_unfinished(output_dir: Path, suite_name: str, matches) -> Path | None:
    """The newest run directory ``SUITE-*`` under ``output_dir`` whose readable manifest ``matches`` and
    whose status is not complete."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    for cand in sorted(output_dir.glob(f"{suite_name}-*"), reverse=True):
        try:
            m = RunStore(cand).manifest()
        except StoreError:
            continue
        if matches(m) and m.get("status") != "complete":
            return cand
    return None
