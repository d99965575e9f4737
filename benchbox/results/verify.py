"""`benchbox verify`: is a run directory (or a bundle) what it says it is?

Scores are computed, never trusted (docs/leaderboard.md). Each check names what failed:

1. **Record digests**: every fold record matches the sha256 the manifest lists for it (written when
   the fold finished, ``record_digests``); a record added, edited or removed afterwards is named.
2. **Suite**: the stored suite.toml reads, and its digest is the one the manifest and records carry.
3. **Records against the split**: each fold record tested exactly the samples its fold holds in the
   stored split (splits/<data>.json), and the split's fingerprint is the manifest's.
4. **Folds re-derived** from the suite, its seed and the data's ids, when the data are present here
   (else this check says it was skipped and why): they must equal the stored split, and the data's
   fingerprint the manifest's.
5. **Re-scored**: every metric computed again from the stored predictions through the run's declared
   evaluators; where the run stores a summary (summary.csv), its numbers must equal these.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from benchbox.errors import BenchboxError
from benchbox.execute.store import DIGESTS, RunStore, file_digest, split_fingerprint

#: relative tolerance when comparing a stored summary's numbers with the re-scored ones (CSV round trip)
SUMMARY_RTOL = 1e-6

#: the manifest key a bundle made with --hash-ids sets: how its sample and patient ids were hashed
ID_HASH = "id_hash"


@dataclass
class Verdict:
    """What verify found: checks passed, failures (each naming the file and the reason), checks skipped."""

    source: str
    ok: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def hash_id(value: str) -> str:
    """A sample or patient id as a bundle made with ``--hash-ids`` stores it: ``h:`` and the first 20
    hex digits of its sha256. The same id hashes the same everywhere, so splits, patients and paired
    comparisons survive; the names do not (though a guessable id can be found by hashing guesses)."""
    import hashlib

    return "h:" + hashlib.sha256(str(value).encode("utf-8")).hexdigest()[:20]


def verify_run(run_dir, registry, data_dir=None, source: str | None = None) -> Verdict:
    """Every check above on one run directory; ``source`` names it in messages (a bundle's file)."""
    store = RunStore(run_dir)
    verdict = Verdict(str(source or run_dir))
    manifest = store.manifest()
    check_digests(store, manifest, verdict)
    suite = check_suite(store, manifest, registry, verdict)
    check_records_against_splits(store, manifest, verdict)
    rederive_folds(store, manifest, suite, registry, data_dir, verdict)
    rescore(store, registry, verdict)
    if source is not None and str(source) != str(run_dir):  # a bundle: name its members, not the temporary folder
        for lines in (verdict.ok, verdict.failures, verdict.skipped):
            lines[:] = [
                line.replace(f"{store.path}{os.sep}", f"{source} member ").replace(str(store.path), str(source))
                for line in lines
            ]
    return verdict


def check_digests(store: RunStore, manifest: dict, verdict: Verdict) -> None:
    listed = manifest.get(DIGESTS)
    files = sorted((store.path / "folds").glob("*.json"))
    if not isinstance(listed, dict) or not listed:
        verdict.failures.append(
            f"{store.manifest_path}: lists no fold record digests ({DIGESTS}); the run was made by a benchbox "
            f"older than record digests, so its {len(files)} record(s) cannot be checked against what was written"
        )
        return
    bad = 0
    for p in files:
        name = store.member_name(p)
        expected = listed.get(name)
        if expected is None:
            verdict.failures.append(
                f"{p}: not listed in the manifest's record digests: added or renamed after the run finished"
            )
            bad += 1
        elif file_digest(p) != expected:
            verdict.failures.append(
                f"{p}: its content does not match the sha256 the manifest lists for it: the record was edited "
                "after its fold finished"
            )
            bad += 1
    present = {store.member_name(p) for p in files}
    for name in sorted(set(listed) - present):
        verdict.failures.append(f"{store.path / name}: listed in the manifest's record digests but missing")
        bad += 1
    if not bad:
        verdict.ok.append(f"{len(files)} fold record(s) match the digests the manifest lists")


def check_suite(store: RunStore, manifest: dict, registry, verdict: Verdict):
    """The stored suite's digest against the manifest's, and the suite loaded (None, with the reason,
    when it cannot be: a plugin not installed here, say)."""
    import tomllib

    from benchbox.define.suite import load_suite, raw_digest

    path = store.path / "suite.toml"
    if not path.is_file():
        verdict.failures.append(f"{path}: missing; the run's suite cannot be checked or its folds re-derived")
        return None
    try:
        digest = raw_digest(tomllib.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        verdict.failures.append(f"{path}: unreadable ({exc})")
        return None
    removed = manifest.get("suite_paths_removed")
    if removed:
        verdict.skipped.append(
            f"{path}: its digest cannot be recomputed: `benchbox bundle` removed its absolute {', '.join(removed)} "
            "(it checked the suite against the run's manifest before bundling)"
        )
    elif digest != manifest.get("suite_digest"):
        verdict.failures.append(
            f"{path}: its digest {digest} is not the manifest's ({manifest.get('suite_digest')}): "
            "the suite file was edited after the run"
        )
    else:
        verdict.ok.append(f"suite.toml is the suite the run was made with (digest {digest})")
    try:
        return load_suite(path, registry)
    except BenchboxError as exc:
        verdict.skipped.append(f"{path}: cannot be loaded here ({' '.join(str(exc).split())[:300]})")
        return None


def stored_split(store: RunStore, slug: str, verdict: Verdict, missing: str = "") -> dict | None:
    """The run's stored split of ``slug``, or None: when it cannot be read (a failure says why) or the run
    has none (a failure says ``missing`` where given)."""
    try:
        split = store.read_split(slug)
    except BenchboxError as exc:
        verdict.failures.append(str(exc))
        return None
    if split is None and missing:
        verdict.failures.append(f"{store.split_path(slug)}: {missing}")
    return split


def check_records_against_splits(store: RunStore, manifest: dict, verdict: Verdict) -> None:
    """Each record's test ids are its fold's samples in the stored split; each split's fingerprint is the
    manifest's."""
    records, problems = store.read_records(manifest)
    verdict.failures += problems
    by_data = defaultdict(list)
    for r in records:
        if not r.refit:
            by_data[r.cell.data.slug].append(r)
    datasets = manifest.get("datasets") or {}
    for slug, recs in by_data.items():
        split = stored_split(store, slug, verdict, missing=f"missing; the records of {slug} cannot be checked")
        if split is None:
            continue
        try:
            folds = np.asarray(split["fold"], dtype=np.int64)
            fingerprint = split_fingerprint(split["ids"], folds, str(split.get("protocol") or ""))
        except (ValueError, TypeError) as exc:
            verdict.failures.append(f"{store.split_path(slug)}: damaged ({exc})")
            continue
        recorded = (datasets.get(slug) or {}).get("split_fingerprint")
        if recorded and recorded != fingerprint:
            verdict.failures.append(
                f"{store.split_path(slug)}: its folds do not give the split fingerprint the manifest records "
                f"({recorded[:19]}...): the split was edited"
            )
        ids = np.asarray(split["ids"], dtype=str)
        rows = folds.reshape(-1, len(ids))
        wrong = 0
        for r in recs:
            holding = np.flatnonzero((rows == r.fold).any(axis=1))
            expected = sorted(ids[rows[holding[0]] == r.fold].tolist()) if len(holding) else []
            if sorted(r.test_ids) != expected:
                wrong += 1
                verdict.failures.append(
                    f"{store.record_path(r.cell, r.fold)}: its test images are not fold {r.fold} of the stored split "
                    f"({len(r.test_ids)} tested, the split's fold holds {len(expected)})"
                )
        if not wrong:
            verdict.ok.append(f"the {len(recs)} record(s) of {slug} tested exactly their folds of the stored split")


def rederive_folds(store: RunStore, manifest: dict, suite, registry, data_dir, verdict: Verdict) -> None:
    from benchbox.define.plan import prepare_data

    if suite is None:
        verdict.skipped.append("folds not re-derived: the suite could not be loaded (above)")
        return
    try:
        data = prepare_data(suite, registry, data_dir)
    except BenchboxError as exc:
        verdict.skipped.append(
            f"folds not re-derived from the suite and the data: the data are not available here "
            f"({str(exc).splitlines()[0]}); pass --data-dir to check them"
        )
        return
    hashed = manifest.get(ID_HASH)
    datasets = manifest.get("datasets") or {}
    for key, ds in data.items():
        if ds.folds is None:
            continue
        slug = key.slug
        fingerprint = (datasets.get(slug) or {}).get("fingerprint")
        if fingerprint and ds.samples.fingerprint != fingerprint:
            verdict.failures.append(
                f"data set {key.label}: the images here (fingerprint {str(ds.samples.fingerprint)[:19]}...) are not "
                f"the run's ({str(fingerprint)[:19]}...), so its folds cannot be re-derived; point --data-dir at "
                "the run's data"
            )
            continue
        ids = ds.samples.table["id"].astype(str).tolist()
        if hashed:
            ids = [hash_id(i) for i in ids]
        split = stored_split(store, slug, verdict)  # a missing one is named by check_records_against_splits
        if split is None:
            continue
        drawn = np.asarray(ds.folds).reshape(-1, len(ids))
        stored = np.asarray(split["fold"], dtype=np.int64).reshape(-1, len(split["ids"]))
        mine = {i: tuple(col) for i, col in zip(ids, drawn.T.tolist())}
        theirs = {str(i): tuple(col) for i, col in zip(split["ids"], stored.T.tolist())}
        if mine != theirs:
            moved = sum(1 for i in mine if theirs.get(i) != mine[i]) + len(set(theirs) - set(mine))
            verdict.failures.append(
                f"{store.split_path(slug)}: the folds re-derived from the suite (seed {suite.seed}, "
                f"{suite.protocol.label}) and the data differ from the stored split for {moved} sample(s)"
            )
        else:
            verdict.ok.append(
                f"the folds of {key.label} re-derived from the suite, its seed and the data equal the stored split"
            )


def rescore(store: RunStore, registry, verdict: Verdict) -> None:
    import pandas as pd

    from benchbox.results.summary import summarise
    from benchbox.results.views.report import numeric_frame

    try:
        result = summarise(store, registry, with_sections=False)
    except BenchboxError as exc:
        verdict.failures.append(f"re-scoring failed: {exc}")
        return
    if result.missing_evaluators:
        verdict.skipped.append(
            f"evaluator(s) {', '.join(result.missing_evaluators)} used by the run are not installed here: their "
            "metrics were not re-scored"
        )
    verdict.ok.append(
        f"metrics re-scored from the stored predictions of {len(result.records)} fold(s) by "
        f"{', '.join(result.evaluators) or 'no evaluator'}"
    )
    stored_path = store.path / "summary.csv"
    if not stored_path.is_file():
        verdict.skipped.append("no stored summary (summary.csv) to compare the re-scored metrics with")
        return
    try:
        stored = pd.read_csv(stored_path)
    except (OSError, ValueError) as exc:
        verdict.failures.append(f"{stored_path}: unreadable ({exc})")
        return
    fresh = numeric_frame(result)
    keys = [k for k in ("data", "backbone") if k in fresh.columns and k in stored.columns]
    if not keys:
        verdict.failures.append(f"{stored_path}: has no data/backbone columns to match its rows with")
        return
    fresh_rows = {tuple(str(r[k]) for k in keys): r for _, r in fresh.iterrows()}
    mismatches = []
    for _, row in stored.iterrows():
        key = tuple(str(row[k]) for k in keys)
        mine = fresh_rows.get(key)
        if mine is None:
            mismatches.append(f"{stored_path}: row {' / '.join(key)} has no fold records to re-score it from")
            continue
        differ = []
        for col in stored.columns:
            if col in keys or col not in fresh.columns:
                continue
            a, b = row[col], mine[col]
            if not _numeric(a) or not _numeric(b):
                continue
            a, b = float(a), float(b)
            if math.isnan(a) and math.isnan(b):
                continue
            if not math.isclose(a, b, rel_tol=SUMMARY_RTOL, abs_tol=1e-9):
                differ.append(f"{col} is {a:g} there, {b:g} re-scored")
        if differ:
            mismatches.append(
                f"{stored_path}: {' / '.join(key)}: {len(differ)} figure(s) differ from those re-scored from the "
                f"predictions: {'; '.join(differ[:3])}" + ("; ..." if len(differ) > 3 else "")
            )
    if mismatches:
        verdict.failures += mismatches
    else:
        verdict.ok.append("the stored summary (summary.csv) equals the re-scored metrics")


def _numeric(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def describe(verdict: Verdict) -> list[str]:
    """The verdict as lines: failures first, then what was skipped, then what passed."""
    lines = [f"FAILED  {f}" for f in verdict.failures]
    lines += [f"skipped {s}" for s in verdict.skipped]
    lines += [f"ok      {o}" for o in verdict.ok]
    return lines
