"""Bundles: a run as one portable file (`benchbox bundle RUN_DIR -o FILE`).

A bundle is a zip archive holding the run's manifest, suite, splits, fold records and stored summary
(its environment is in the manifest), and ``bundle.json``: the schema version, the sha256 of every
other member, and what was changed on the way (ids hashed, absolute paths removed). No images, no
fold inspector's arrays (e.g. Grad-CAM maps), no plots, no absolute paths. Everything that reads a run directory (report,
leaderboard, verify, board) reads a bundle: it is extracted, member by member and within size
limits, into a temporary folder that is deleted afterwards.

Reading refuses, naming the file and the reason: a file that is not a zip or is truncated, an
unknown schema version, a member whose name is absolute, holds ``..`` or is not one a bundle has, a
member larger than its limit or an archive whose members add up to more (a decompression bomb), and
a member whose content does not match the digest bundle.json lists for it (a hand-edited bundle).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import time
import zipfile
from pathlib import Path, PurePosixPath

from benchbox.errors import BenchboxError
from benchbox.execute.store import DIGESTS, MANIFEST, RunStore, json_text, sha256_digest, write_atomic

BUNDLE_FORMAT = "benchbox-bundle/1"
READABLE_BUNDLES = (BUNDLE_FORMAT,)
INDEX = "bundle.json"
SUFFIX = ".bbx.zip"

#: limits on what a bundle may expand to (a decompression bomb is refused before anything is written)
MAX_MEMBER_BYTES = 256 * 2**20
MAX_TOTAL_BYTES = 2 * 2**30
MAX_MEMBERS = 100_000
MAX_RATIO = 1000  # uncompressed / compressed size of one member (JSON of predictions compresses ~5-20x)

#: the members a bundle may hold: the index, manifest, suite and summary, splits and fold records
_ALLOWED = re.compile(r"^(bundle\.json|manifest\.json|suite\.toml|summary\.csv|(splits|folds)/[^/\\]+\.json)$")
#: keys of a suite whose value may be a local path: removed from a bundle when absolute
PATH_KEYS = ("output_dir", "data_dir")


class BundleError(BenchboxError):
    """A bundle that cannot be read or written."""


def is_bundle(path) -> bool:
    return Path(path).is_file()


# --- writing ---------------------------------------------------------------------------------------
def write_bundle(run_dir, output, registry, hash_ids: bool = False) -> dict:
    """Write ``run_dir`` as a bundle at ``output``; refuses a run whose records fail their digests.
    Returns bundle.json's content."""
    from benchbox.results.verify import Verdict, check_digests, check_suite, hash_id

    store = RunStore(run_dir)
    manifest = store.manifest()
    verdict = Verdict(str(run_dir))
    check_digests(store, manifest, verdict)
    check_suite(store, manifest, registry, verdict)
    if verdict.failures:
        raise BundleError(f"{run_dir}: not bundled, it fails its checks: " + "; ".join(verdict.failures))
    output = Path(output)
    if output.exists() and output.is_dir():
        raise BundleError(
            f"-o {output}: is a folder; name the bundle file to write (e.g. {Path(run_dir).name}{SUFFIX})"
        )
    changes: list[str] = []
    members: dict[str, bytes] = {}
    home, root = str(Path.home()), str(store.path.resolve())

    suite_text = (store.path / "suite.toml").read_text(encoding="utf-8")
    suite_text, removed = _without_absolute_paths(suite_text)
    manifest = dict(manifest)
    manifest["suite_path"] = Path(str(manifest.get("suite_path") or "suite.toml")).name
    raw = dict(manifest.get("suite_as_run") or {})
    for key in removed:
        raw.pop(key, None)
    manifest["suite_as_run"] = raw
    if removed:
        changes.append(f"removed the suite's absolute {', '.join(removed)} (suite.toml and the manifest)")
        manifest["suite_paths_removed"] = removed
    if scrub(suite_text) != suite_text:
        suite_text = scrub(suite_text)
        removed.append("absolute paths in its tables' options")
        manifest["suite_paths_removed"] = removed
        changes.append("cut absolute paths in the suite's options to their last part")
    members["suite.toml"] = suite_text.encode("utf-8")

    split_names = sorted(p.name for p in (store.path / "splits").glob("*.json"))
    for name in split_names:
        data = json.loads((store.path / "splits" / name).read_text(encoding="utf-8"))
        if hash_ids:
            data["ids"] = [hash_id(i) for i in data.get("ids") or []]
            from benchbox.execute.store import split_fingerprint

            data["fingerprint"] = split_fingerprint(data["ids"], data["fold"], str(data.get("protocol") or ""))
        members[f"splits/{name}"] = json_text(data).encode("utf-8")
    digests, scrubbed_records = {}, []
    for p in sorted((store.path / "folds").glob("*.json")):
        name = store.member_name(p)
        content = p.read_bytes()
        if hash_ids:
            content = json_text(_hashed_record(json.loads(content), hash_id)).encode("utf-8")
        if ABSOLUTE.search(content.decode("utf-8")):
            content = json_text(_scrubbed(json.loads(content))).encode("utf-8")
            scrubbed_records.append(name)
        members[name] = content
        digests[name] = sha256_digest(content)
    if hash_ids:
        manifest["id_hash"] = "sha256, first 20 hex digits, 'h:' prefix (benchbox.results.verify.hash_id)"
        datasets = {k: dict(v) for k, v in (manifest.get("datasets") or {}).items() if isinstance(v, dict)}
        for slug, meta in datasets.items():
            if f"{slug}.json" in split_names and meta.get("split_fingerprint"):
                meta["split_fingerprint"] = json.loads(members[f"splits/{slug}.json"])["fingerprint"]
        manifest["datasets"] = datasets
        changes.append(
            "hashed every sample and patient id (splits, records; fingerprints of the splits recomputed; "
            "record digests are of the hashed records)"
        )
    if scrubbed_records:
        changes.append(
            f"cut absolute paths to their last part in {len(scrubbed_records)} fold record(s) (e.g. "
            f"{scrubbed_records[0]}; their digests are of the bundled records)"
        )
    manifest = {k: (v if k == DIGESTS else _scrubbed(v)) for k, v in manifest.items()}
    manifest[DIGESTS] = digests
    members[MANIFEST] = json_text(manifest).encode("utf-8")
    summary = store.path / "summary.csv"
    if summary.is_file():
        members["summary.csv"] = summary.read_bytes()
    leaks = [n for n, b in members.items() if root.encode() in b or (len(home) > 1 and home.encode() in b)]
    if leaks:
        raise BundleError(
            f"{run_dir}: not bundled: {', '.join(leaks[:3])} hold(s) an absolute path of this machine "
            f"({root if any(root.encode() in members[n] for n in leaks) else home}); remove it from the suite's "
            "options (use a relative path) and rerun, or report which field holds it"
        )
    index = {
        "format": BUNDLE_FORMAT,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run": store.path.name,
        "suite": manifest.get("suite"),
        "benchbox": (manifest.get("environment") or {}).get("benchbox"),
        "ids_hashed": bool(hash_ids),
        "changes": changes,
        "members": {n: sha256_digest(b) for n, b in sorted(members.items())},
    }
    buffer = _zip_bytes({INDEX: json_text(index).encode("utf-8"), **members})
    write_atomic(output, buffer)
    return index


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as z:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))  # reproducible bytes
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, data)
    return buf.getvalue()


def _hashed_record(data: dict, hash_id) -> dict:
    for key in ("test_ids", "test_groups"):
        if isinstance(data.get(key), list):
            data[key] = [hash_id(v) for v in data[key]]
    for ext in (data.get("external") or {}).values():
        if isinstance(ext, dict):
            for key in ("ids", "groups"):
                if isinstance(ext.get(key), list):
                    ext[key] = [hash_id(v) for v in ext[key]]
    return data


#: an absolute POSIX path inside a string (not the slashes of a URL or of "a/b" relative paths)
ABSOLUTE = re.compile(r"(?<![\w:/.~-])(/(?:[\w.@+-]+/)+[\w.@+-]*)")


def scrub(text: str) -> str:
    """``text`` with every absolute path cut to ``…/`` and its last part ("/work/data/x.png" -> "…/x.png")."""
    return ABSOLUTE.sub(lambda m: "…/" + (m.group(1).rstrip("/").rsplit("/", 1)[-1]), text)


def _scrubbed(obj):
    if isinstance(obj, str):
        return scrub(obj)
    if isinstance(obj, dict):
        return {k: _scrubbed(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_scrubbed(v) for v in obj]
    return obj


def _without_absolute_paths(text: str) -> tuple[str, list[str]]:
    """The suite's text without top-level ``output_dir`` / ``data_dir`` lines holding absolute paths."""
    removed, lines, in_table = [], [], False
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("["):
            in_table = True
        m = re.match(r"^\s*(" + "|".join(PATH_KEYS) + r")\s*=\s*[\"'](.*)[\"']\s*(#.*)?$", line)
        if not in_table and m and (os.path.isabs(m.group(2)) or m.group(2).startswith("~")):
            removed.append(m.group(1))
            lines.append(f"# {m.group(1)}: an absolute path, removed by `benchbox bundle`\n")
            continue
        lines.append(line)
    return "".join(lines), removed


# --- reading ---------------------------------------------------------------------------------------
def _safe_name(name: str) -> bool:
    p = PurePosixPath(name)
    return (
        bool(name)
        and not name.startswith(("/", "\\"))
        and "\\" not in name
        and not re.match(r"^[A-Za-z]:", name)
        and ".." not in p.parts
        and _ALLOWED.match(name) is not None
    )


def read_index(path) -> dict:
    """A bundle's bundle.json, after checking the archive's member list (names and sizes)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            return _index_of(z, path)
    except zipfile.BadZipFile as exc:
        raise BundleError(f"{path}: not a readable bundle (truncated or damaged zip: {exc})") from None
    except OSError as exc:
        raise BundleError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _index_of(z: zipfile.ZipFile, path: Path) -> dict:
    _check_members(path, z.infolist())
    if INDEX not in z.namelist():
        raise BundleError(f"{path}: not a benchbox bundle (no {INDEX}); write one with `benchbox bundle`")
    try:
        index = json.loads(z.read(INDEX))
    except (ValueError, RecursionError) as exc:
        raise BundleError(f"{path}: its {INDEX} is damaged ({exc})") from None
    if not isinstance(index, dict) or index.get("format") not in READABLE_BUNDLES:
        fmt = index.get("format") if isinstance(index, dict) else None
        raise BundleError(
            f"{path}: unknown bundle schema version {fmt!r}; this benchbox reads {', '.join(READABLE_BUNDLES)} "
            "(upgrade benchbox to read newer bundles)"
        )
    if not isinstance(index.get("members"), dict):
        raise BundleError(f"{path}: its {INDEX} lists no member digests")
    return index


def _check_members(path: Path, infos) -> None:
    if len(infos) > MAX_MEMBERS:
        raise BundleError(f"{path}: refused: {len(infos)} members (a bundle holds at most {MAX_MEMBERS})")
    total = 0
    seen = set()
    for info in infos:
        name = info.filename
        if not _safe_name(name):
            why = (
                "an absolute path"
                if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name)
                else "a path that climbs out of the bundle (..)"
                if ".." in PurePosixPath(name.replace("\\", "/")).parts
                else "not a member a bundle has"
            )
            raise BundleError(f"{path}: refused: member {name!r} is {why}; nothing was extracted")
        if name in seen:
            raise BundleError(f"{path}: refused: member {name!r} appears twice")
        seen.add(name)
        if info.file_size > MAX_MEMBER_BYTES:
            raise BundleError(
                f"{path}: refused: member {name} would expand to {info.file_size} bytes (limit {MAX_MEMBER_BYTES})"
            )
        if info.compress_size and info.file_size > 1_000_000 and info.file_size / info.compress_size > MAX_RATIO:
            raise BundleError(
                f"{path}: refused: member {name} expands {info.file_size // max(info.compress_size, 1)}-fold "
                "(a decompression bomb?); a bundle's JSON compresses far less"
            )
        total += info.file_size
    if total > MAX_TOTAL_BYTES:
        raise BundleError(f"{path}: refused: its members would expand to {total} bytes (limit {MAX_TOTAL_BYTES})")


def extract_bundle(path, target, name_from_index: bool = False) -> tuple[dict, Path]:
    """Extract a bundle into the folder ``target`` (or, with ``name_from_index``, into a folder of
    ``target`` named after the bundled run) after every check; return its index and the folder. Nothing
    is written outside it; a member that fails its digest stops the extraction."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:  # opened once: the member list, the index, the members
            index = _index_of(z, path)
            if name_from_index:
                name = re.sub(r"[^A-Za-z0-9._-]+", "-", str(index.get("run") or "")).strip(".-")
                target = Path(target) / (name[:100] or _run_name(path))
            target = Path(target)
            target.mkdir(parents=True, exist_ok=True)
            root = os.path.abspath(target)
            listed = index["members"]
            names = [n for n in z.namelist() if n != INDEX]
            for name in sorted(set(listed) - set(names)):
                raise BundleError(f"{path}: member {name} listed in {INDEX} is missing (a truncated or edited bundle)")
            made = set()
            for name in names:
                if name not in listed:
                    raise BundleError(f"{path}: member {name} is not listed in {INDEX} (added after bundling)")
                data = _read_member(z, name, path)
                if sha256_digest(data) != listed[name]:
                    raise BundleError(
                        f"{path}: member {name} does not match the digest {INDEX} lists for it (edited after bundling)"
                    )
                dest = os.path.normpath(os.path.join(root, name))  # names were checked; this is a second guard
                if not dest.startswith(root + os.sep):
                    raise BundleError(f"{path}: refused: member {name!r} would be written outside {target}")
                parent = os.path.dirname(dest)
                if parent not in made:
                    os.makedirs(parent, exist_ok=True)
                    made.add(parent)
                with open(dest, "xb") as f:
                    f.write(data)
    except zipfile.BadZipFile as exc:
        raise BundleError(f"{path}: not a readable bundle (truncated or damaged zip: {exc})") from None
    except (OSError, EOFError) as exc:
        raise BundleError(f"{path}: cannot be extracted ({exc})") from None
    if not (target / MANIFEST).is_file():
        raise BundleError(f"{path}: holds no {MANIFEST}; not a bundle of a run")
    return index, target


def _read_member(z: zipfile.ZipFile, name: str, path: Path) -> bytes:
    """A member's bytes, never more than its limit (zipfile stops at the size the header declares, and a
    member whose data do not match its CRC raises BadZipFile)."""
    with z.open(name) as f:
        data = f.read(MAX_MEMBER_BYTES + 1)
    if len(data) > MAX_MEMBER_BYTES:
        raise BundleError(f"{path}: refused: member {name} expands beyond {MAX_MEMBER_BYTES} bytes")
    return data


@contextlib.contextmanager
def opened(source):
    """A run directory to read: ``source`` itself, or a bundle extracted into a temporary folder (deleted
    on exit)."""
    source = Path(source)
    if not is_bundle(source):
        yield source
        return
    with tempfile.TemporaryDirectory(prefix="benchbox-bundle-", dir=_scratch()) as tmp:
        # in a folder named after the run: tables name the run, not the bundle file
        _, run_dir = extract_bundle(source, tmp, name_from_index=True)
        yield run_dir


def _scratch() -> str | None:
    """Where bundles are extracted: memory-backed /dev/shm where there is one (creating a file there costs
    a twentieth of a disk's), else the temporary folder. BENCHBOX_SCRATCH names another folder."""
    chosen = os.environ.get("BENCHBOX_SCRATCH")
    if chosen:
        return chosen
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else None


def each_opened(sources, problems: list[str]):
    """(source, run directory) of each source in turn, a bundle extracted only while it is being read (so a
    board of any size needs the space of one bundle); one that cannot be read is added to ``problems``."""
    for source in sources:
        try:
            with opened(source) as run_dir:
                yield Path(source), run_dir
        except BundleError as exc:
            problems.append(f"{exc}; skipped")


def _run_name(source: Path) -> str:
    name = source.name
    for suffix in (SUFFIX, ".zip", ".bbx"):
        if name.endswith(suffix):
            return name[: -len(suffix)] or "run"
    return name


def content_digest(path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


@contextlib.contextmanager
def opened_many(sources):
    """Several sources (a leaderboard's, a board's): ``(pairs, problems)`` where pairs are (source, run
    directory) of those that opened; a bundle that cannot be read is a problem naming it, not an error."""
    pairs, problems = [], []
    with contextlib.ExitStack() as stack:
        for source in sources:
            try:
                pairs.append((Path(source), stack.enter_context(opened(source))))
            except BundleError as exc:
                problems.append(f"{exc}; skipped")
        yield pairs, problems


def as_sources(text: str, pairs) -> str:
    """A message about an extracted bundle, naming the bundle instead of the temporary folder."""
    for source, run_dir in pairs:
        if Path(source) != Path(run_dir):
            text = text.replace(str(run_dir), str(source))
    return text
