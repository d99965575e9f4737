"""Record digests, `benchbox verify`, bundles and their bad inputs (a fake backbone: no framework)."""

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from benchbox.define.suite import load_suite
from benchbox.errors import BenchboxError
from benchbox.execute.runner import run_suite
from benchbox.execute.store import DIGESTS, RunStore, file_digest
from benchbox.plugins import load_registry
from benchbox.results import bundle as bb
from benchbox.results.verify import hash_id, verify_run
from conftest import write_suite
from test_runner import SUITE, Events


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A finished run of the synthetic set (re-derivable anywhere) with a framework-free backbone."""
    tmp = tmp_path_factory.mktemp("verify")
    registry = load_registry(extra_plugins=[Events()])
    text = SUITE.format(out=tmp / "runs").replace("k = 4", "k = 3\nrepeats = 2")
    suite = load_suite(write_suite(tmp / "s.toml", text), registry)
    return Path(run_suite(suite, registry).run_dir), registry


def copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def edit_record(run_dir: Path) -> Path:
    """One number of one fold record changed by hand (a probability nudged)."""
    p = sorted((run_dir / "folds").glob("*.json"))[1]
    data = json.loads(p.read_text())
    data["probabilities"][0][0] = round(data["probabilities"][0][0] + 0.2, 6)
    data["probabilities"][0][1] = round(data["probabilities"][0][1] - 0.2, 6)
    p.write_text(json.dumps(data, indent=1))
    return p


# --- digests and verify -------------------------------------------------------------------------
def test_manifest_lists_a_digest_per_record_written_when_it_finished(made):
    run_dir, _ = made
    store = RunStore(run_dir)
    listed = store.manifest()[DIGESTS]
    files = sorted((run_dir / "folds").glob("*.json"))
    assert len(files) == 6 and sorted(listed) == [f"folds/{p.name}" for p in files]
    assert all(listed[f"folds/{p.name}"] == file_digest(p) for p in files)


def test_verify_passes_an_untouched_run_and_rederives_its_folds(made):
    run_dir, registry = made
    verdict = verify_run(run_dir, registry)
    assert verdict.passed, verdict.failures
    text = "\n".join(verdict.ok)
    assert "6 fold record(s) match" in text and "re-derived from the suite" in text
    assert "summary.csv) equals the re-scored" in text and not verdict.skipped


def test_verify_names_an_edited_record_and_the_stale_summary(made, tmp_path):
    run_dir, registry = made
    copy = copy_run(run_dir, tmp_path / "run")
    edited = edit_record(copy)
    verdict = verify_run(copy, registry)
    assert not verdict.passed
    assert any(str(edited) in f and "edited after its fold finished" in f for f in verdict.failures)
    assert any("summary.csv" in f and "re-scored from the predictions" in f for f in verdict.failures)


def test_verify_names_a_moved_fold_and_an_added_record(made, tmp_path):
    run_dir, registry = made
    copy = copy_run(run_dir, tmp_path / "run")
    split = copy / "splits" / "syn.json"
    data = json.loads(split.read_text())
    row = data["fold"][1]
    i = next(j for j in range(len(row)) if row[j] != row[0])
    row[0], row[i] = row[i], row[0]  # two samples of repeat 1 swap folds
    split.write_text(json.dumps(data))
    extra = copy / "folds" / "syn__o__fold09.json"
    extra.write_text((copy / "folds" / "syn__o__fold00.json").read_text())
    verdict = verify_run(copy, registry)
    failures = "\n".join(verdict.failures)
    assert f"{extra}: not listed in the manifest's record digests" in failures
    assert "the split was edited" in failures
    assert "differ from the stored split for 2 sample(s)" in failures
    assert "its test images are not fold" in failures


def test_verify_names_a_missing_and_a_damaged_split_once_each(made, tmp_path):
    run_dir, registry = made
    missing = copy_run(run_dir, tmp_path / "missing")
    (missing / "splits" / "syn.json").unlink()
    failures = verify_run(missing, registry).failures
    assert [f for f in failures if "splits" in f] == [
        f"{missing / 'splits' / 'syn.json'}: missing; the records of syn cannot be checked"
    ]
    damaged = copy_run(run_dir, tmp_path / "damaged")
    (damaged / "splits" / "syn.json").write_text("{not json")
    failures = verify_run(damaged, registry).failures
    said = [f for f in failures if "syn.json" in f]
    assert len(said) == 2 and all(": missing;" not in f for f in said), failures  # one per check that reads it


def test_verify_names_an_edited_suite(made, tmp_path):
    run_dir, registry = made
    copy = copy_run(run_dir, tmp_path / "run")
    text = (copy / "suite.toml").read_text().replace('plugin = "synthetic"', 'plugin = "folder"\nroot = "nowhere"')
    (copy / "suite.toml").write_text(text)
    verdict = verify_run(copy, registry)
    assert any("suite file was edited" in f for f in verdict.failures)
    assert any(s.startswith("folds not re-derived") for s in verdict.skipped)


def test_verify_says_when_the_data_are_absent(made, monkeypatch):
    from benchbox.define import plan
    from benchbox.errors import DataError

    def absent(*args, **kwargs):
        raise DataError("data set syn: /nowhere/chest_xray does not exist; pass --data-dir")

    monkeypatch.setattr(plan, "prepare_data", absent)
    run_dir, registry = made
    verdict = verify_run(run_dir, registry)
    assert verdict.passed  # what could be checked passed; the rest says it was skipped, and why
    assert any("folds not re-derived" in s and "/nowhere/chest_xray does not exist" in s for s in verdict.skipped)


def test_a_killed_write_leaves_a_digest_without_its_record_never_the_reverse(made, tmp_path, monkeypatch):
    from benchbox.execute import store as store_module

    run_dir, _ = made
    copy = copy_run(run_dir, tmp_path / "run")
    store = RunStore(copy)
    record = store.read_records()[0][0]
    target = store.record_path(record.cell, record.fold)
    target.unlink()
    calls = []

    def dying(path, text):
        calls.append(Path(path).name)
        if Path(path) == target:
            raise KeyboardInterrupt
        return real(path, text)

    real = store_module.write_atomic
    monkeypatch.setattr(store_module, "write_atomic", dying)
    with pytest.raises(KeyboardInterrupt):
        store.write_record(record)
    assert calls == ["manifest.json", target.name] and not target.exists()
    assert not store.has_record(record.cell, record.fold)  # the next run redoes it, and lists its new digest


# --- bundles --------------------------------------------------------------------------------------
def test_bundle_round_trip_verify_report_and_leaderboard(made, tmp_path):
    from benchbox.results.summary import summarise
    from benchbox.results.views import leaderboard as lb

    run_dir, registry = made
    out = tmp_path / "run.bbx.zip"
    index = bb.write_bundle(run_dir, out, registry)
    names = zipfile.ZipFile(out).namelist()
    assert index["format"] == bb.BUNDLE_FORMAT and "bundle.json" in names and "suite.toml" in names
    assert sum(n.startswith("folds/") for n in names) == 6 and not any(n.startswith(("plots", "explan")) for n in names)
    raw = b"".join(zipfile.ZipFile(out).read(n) for n in names)
    assert str(run_dir).encode() not in raw and str(tmp_path).encode() not in raw  # no absolute paths
    assert "output_dir" in " ".join(index["changes"])
    with bb.opened(out) as extracted:
        verdict = verify_run(extracted, registry, source=out)
        from_bundle = summarise(RunStore(extracted), registry).summary
    assert verdict.passed, verdict.failures
    assert any("digest cannot be recomputed" in s for s in verdict.skipped)  # output_dir was absolute
    assert any("re-derived from the suite" in o for o in verdict.ok)
    original = summarise(RunStore(run_dir), registry).summary
    assert from_bundle["accuracy_3class"].tolist() == original["accuracy_3class"].tolist()
    with bb.opened_many([run_dir, out]) as (pairs, problems):
        entries, more, metrics = lb.collect([d for _, d in pairs], registry, sources=[s for s, _ in pairs])
    ranked = lb.rank(entries, metrics["accuracy_3class"])
    assert not problems and set(ranked["run_dir"]) == {str(run_dir), str(out)}
    assert ranked["paired_group"].nunique() == 1  # the run and its bundle: the same data and folds


def test_hashed_ids_keep_splits_patients_and_verification(made, tmp_path):
    run_dir, registry = made
    out = tmp_path / "hashed.bbx.zip"
    bb.write_bundle(run_dir, out, registry, hash_ids=True)
    z = zipfile.ZipFile(out)
    record = json.loads(z.read(sorted(n for n in z.namelist() if n.startswith("folds/"))[0]))
    original = json.loads(sorted((run_dir / "folds").glob("*.json"))[0].read_text())
    assert record["test_ids"] == [hash_id(i) for i in original["test_ids"]]
    assert record["test_groups"] == [hash_id(g) for g in original["test_groups"]]
    assert all(i.encode() not in z.read("splits/syn.json") for i in original["test_ids"][:3])
    with bb.opened(out) as extracted:
        verdict = verify_run(extracted, registry, source=out)
    assert verdict.passed, verdict.failures
    assert any("re-derived from the suite" in o for o in verdict.ok)  # ids hashed the same way here


def rezip(src: Path, dst: Path, change) -> Path:
    """A copy of a bundle with its members changed by ``change(dict name -> bytes)``."""
    z = zipfile.ZipFile(src)
    members = {n: z.read(n) for n in z.namelist()}
    change(members)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as out:
        for n, b in members.items():
            out.writestr(n, b)
    dst.write_bytes(buf.getvalue())
    return dst


@pytest.fixture(scope="module")
def bundle_file(made, tmp_path_factory):
    run_dir, registry = made
    out = tmp_path_factory.mktemp("bundle") / "good.bbx.zip"
    bb.write_bundle(run_dir, out, registry)
    return out


def record_name(members) -> str:
    return sorted(n for n in members if n.startswith("folds/"))[1]


def nudge(members, name):
    data = json.loads(members[name])
    data["probabilities"][0][0] += 0.1
    members[name] = json.dumps(data).encode()


def test_bad_bundles_are_refused_naming_the_file_and_the_reason(bundle_file, tmp_path):
    truncated = tmp_path / "truncated.bbx.zip"
    truncated.write_bytes(bundle_file.read_bytes()[: bundle_file.stat().st_size // 2])

    def future(m):
        index = json.loads(m["bundle.json"])
        index["format"] = "benchbox-bundle/9"
        m["bundle.json"] = json.dumps(index).encode()

    def edited(m):
        nudge(m, record_name(m))

    cases = {
        truncated: "truncated or damaged zip",
        rezip(bundle_file, tmp_path / "future.zip", future): "unknown bundle schema version 'benchbox-bundle/9'",
        rezip(bundle_file, tmp_path / "edited.zip", edited): "does not match the digest bundle.json lists",
        rezip(bundle_file, tmp_path / "climb.zip", lambda m: m.update({"../evil.json": b"{}"})): "climbs out",
        rezip(bundle_file, tmp_path / "abs.zip", lambda m: m.update({"/tmp/evil.json": b"{}"})): "absolute path",
        rezip(bundle_file, tmp_path / "odd.zip", lambda m: m.update({"run.sh": b"rm -rf /"})): "not a member",
        rezip(bundle_file, tmp_path / "lost.zip", lambda m: m.pop(record_name(m))): "is missing",
    }
    for path, reason in cases.items():
        target = tmp_path / f"x-{path.stem}"
        with pytest.raises(BenchboxError) as err:
            bb.extract_bundle(path, target)
        message = str(err.value)
        assert str(path) in message and reason in message and "\n" not in message, message
    assert not (tmp_path / "evil.json").exists() and not Path("/tmp/evil.json").exists()


def test_a_decompression_bomb_is_refused_before_anything_is_written(bundle_file, tmp_path, monkeypatch):
    bomb = rezip(bundle_file, tmp_path / "bomb.zip", lambda m: m.update({"folds/zz.json": b"0" * 3_000_000}))
    target = tmp_path / "out"
    with pytest.raises(BenchboxError, match="decompression bomb"):
        bb.extract_bundle(bomb, target)
    assert not target.exists()
    monkeypatch.setattr(bb, "MAX_TOTAL_BYTES", 10_000)
    with pytest.raises(BenchboxError, match="would expand to .* bytes \\(limit 10000\\)"):
        bb.extract_bundle(bundle_file, tmp_path / "out2")


def test_a_consistently_forged_bundle_still_fails_verify_on_its_record(bundle_file, tmp_path, made):
    """bundle.json's member digests recomputed after editing a record: extraction passes, but the record
    no longer matches the digest the manifest lists for it, and the re-scored metrics differ."""
    _, registry = made

    def forge(m):
        name = record_name(m)
        nudge(m, name)
        index = json.loads(m["bundle.json"])
        index["members"][name] = bb.sha256_digest(m[name])
        m["bundle.json"] = json.dumps(index).encode()

    forged = rezip(bundle_file, tmp_path / "forged.zip", forge)
    with bb.opened(forged) as extracted:
        verdict = verify_run(extracted, registry, source=forged)
    assert not verdict.passed
    assert any("edited after its fold finished" in f and "fold01" in f for f in verdict.failures)


def test_cli_verify_bundle_and_one_line_errors(made, tmp_path, capsys):
    from benchbox.cli import main

    run_dir, _ = made

    def cli(*args):
        with pytest.raises(SystemExit) as exit_:
            main([str(a) for a in args])
        out = capsys.readouterr()
        return exit_.value.code, out.out, out.err

    out = tmp_path / "cli.bbx.zip"
    code, text, _ = cli("bundle", run_dir, "-o", out)
    assert code == 0 and "6 fold record(s)" in text
    code, text, err = cli("verify", out)
    assert code == 0 and "verified" in text, text + err
    copy = copy_run(run_dir, tmp_path / "run")
    edited = edit_record(copy)
    code, text, err = cli("verify", copy)
    assert code == 1 and f"FAILED  {edited}" in err.replace("\n", "") and "Traceback" not in err
    code, _, err = cli("bundle", copy, "-o", tmp_path / "refused.zip")
    assert code == 1 and "not bundled" in err and not (tmp_path / "refused.zip").exists()
    junk = tmp_path / "junk.bbx.zip"
    junk.write_bytes(b"not a zip at all")
    code, _, err = cli("verify", junk)
    assert code == 1 and "truncated or damaged zip" in err and "Traceback" not in err
    code, _, err = cli("report", junk)
    assert code == 1 and str(junk) in err.replace("\n", "")
    code, text, err = cli("leaderboard", out, junk, "--format", "csv")
    assert code == 0 and "accuracy_3class" in text and "skipped" in err


def test_hash_id_is_stable():
    assert hash_id("person1_bacteria_1.jpeg") == hash_id("person1_bacteria_1.jpeg") != hash_id("x")
    assert hash_id("a").startswith("h:") and len(hash_id("a")) == 22
    assert np.all([hash_id(str(i)) != hash_id(str(i + 1)) for i in range(50)])


def test_absolute_paths_anywhere_in_the_manifest_are_cut(made, tmp_path):
    run_dir, registry = made
    copy = copy_run(run_dir, tmp_path / "run")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["datasets"]["syn"]["notes"] = ["read 40 images from /work/shared/data/chest_xray/train"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "cut.bbx.zip"
    bb.write_bundle(copy, out, registry)
    bundled = json.loads(zipfile.ZipFile(out).read("manifest.json"))
    assert bundled["datasets"]["syn"]["notes"] == ["read 40 images from …/train"]
    assert (
        bb.scrub("see https://github.com/ieee8023/x and rel/dir/y.png")
        == "see https://github.com/ieee8023/x and rel/dir/y.png"
    )


def test_a_bundle_with_hashed_ids_pairs_with_the_run_that_kept_them(made, tmp_path):
    from benchbox.results.views import leaderboard as lb

    run_dir, registry = made
    hashed = tmp_path / "hashed.bbx.zip"
    bb.write_bundle(run_dir, hashed, registry, hash_ids=True)
    entries, problems, metrics = lb.collect_sources([run_dir, hashed], registry, jobs=1)
    ranked = lb.rank(entries, metrics["accuracy_3class"])
    assert ranked["paired_group"].nunique() == 1 and ranked["paired_group"].iloc[0]
    assert ranked["split_fingerprint"].nunique() == 2  # each shows its own split fingerprint
    other = ranked.iloc[1]
    assert "McNemar over 40 images" in other["pooled_test"]  # the same images matched through their hashes
