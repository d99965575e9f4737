"""Split fingerprints, and paired groups with the corrected resampled t-test in the leaderboard."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchbox.contracts import MetricSpec
from benchbox.execute.records import CellKey
from benchbox.execute.store import RunStore, split_fingerprint, write_json
from benchbox.results.views import leaderboard as lb
from conftest import fold_record

CLASSES = ["covid", "normal", "pneumonia"]
N, K = 60, 5
IDS = [f"img{i:02d}" for i in range(N)]
Y = np.arange(N) % 3
ACC = MetricSpec("accuracy_3class", "Acc 3-class", scale=100, unit="%")


# --- split fingerprints ---------------------------------------------------------------------------
def test_split_fingerprint_is_order_free_and_sees_every_change():
    folds = [i % K for i in range(N)]
    fp = split_fingerprint(IDS, folds, "5-fold (stratified)")
    assert fp.startswith("sha256:") and len(fp) == len("sha256:") + 64
    order = np.random.default_rng(0).permutation(N)
    assert split_fingerprint([IDS[i] for i in order], [folds[i] for i in order], "5-fold (stratified)") == fp
    moved = list(folds)
    moved[3] = (moved[3] + 1) % K  # one image in another fold
    assert split_fingerprint(IDS, moved, "5-fold (stratified)") != fp
    assert split_fingerprint(IDS, folds, "5-fold (stratified+grouped)") != fp
    assert split_fingerprint(IDS[:-1], folds[:-1], "5-fold (stratified)") != fp
    with pytest.raises(ValueError, match="each id needs one fold"):
        split_fingerprint(IDS, folds[:-1], "x")


def test_stored_split_carries_its_fingerprint_and_an_edit_shows(tmp_path):
    store = RunStore(tmp_path / "run")
    store.path.mkdir()
    folds = [i % K for i in range(N)]
    store.write_split("syn", IDS, folds, "5-fold")
    stored = json.loads(store.split_path("syn").read_text())
    assert stored["fingerprint"] == split_fingerprint(IDS, folds, "5-fold") == store.split_fingerprint("syn")
    stored["fold"][0] = 4  # edited by hand, the stored fingerprint left as it was
    store.split_path("syn").write_text(json.dumps(stored))
    assert store.split_fingerprint("syn") != stored["fingerprint"]  # recomputed, never read back
    assert store.split_fingerprint("nothing") == ""


# --- paired tests on hand-made entries ------------------------------------------------------------
def entry(backbone, values, folds=None, split="sha256:" + "a" * 64, data="sha256:" + "d" * 64, group="g"):
    folds = list(range(len(values))) if folds is None else folds
    return {
        "backbone": backbone,
        "plugin": f"x/{backbone}",
        **dict.fromkeys(("framework", "weights", "suite", "hardware", "date", "benchbox", "notes"), ""),
        "grouped": False,
        "run": "r",
        "run_dir": "/nowhere/r",
        "accuracy_3class": float(np.mean(values)),
        "accuracy_3class_folds": list(values),
        "fold_numbers": folds,
        "fold_n_train": 48.0,
        "fold_n_test": 12.0,
        "data_fingerprint": data,
        "split_fingerprint": split,
        "group": group,
    }


def corrected_p(d, n_train=48, n_test=12):
    """Nadeau & Bengio's corrected t-test written out: t = mean / sqrt((1/n + n2/n1) s^2), n - 1 df."""
    d = np.asarray(d, dtype=float)
    t = d.mean() / math.sqrt((1 / len(d) + n_test / n_train) * d.var(ddof=1))
    return 2 * stats.t.sf(abs(t), len(d) - 1)


def test_paired_group_ranks_ties_and_holm():
    best = [0.92, 1.0, 0.92, 1.0, 1.0]
    close = [0.92, 1.0, 0.92, 0.92, 1.0]
    worse = [1 / 3] * 5
    apart = [0.95] * 5  # same composition (same group), other folds: ranked, but not paired
    frame = pd.DataFrame(
        [
            entry("close", close),
            entry("worse", worse),
            entry("best", best),
            entry("apart", apart, split="sha256:" + "b" * 64),
        ]
    )
    ranked = lb.rank(frame, ACC).set_index("backbone")
    p_close = corrected_p(np.subtract(best, close))
    p_worse = corrected_p(np.subtract(best, worse))
    assert p_close > 0.05 and p_worse < 0.001
    # Holm over the family of two: the smaller p doubles, the larger keeps its own (monotone)
    assert ranked.loc["worse", "paired_p"] == pytest.approx(2 * p_worse, rel=1e-9)
    assert ranked.loc["close", "paired_p"] == pytest.approx(max(p_close, 2 * p_worse), rel=1e-9)
    assert ranked.loc["close", "paired_p_raw"] == pytest.approx(p_close, rel=1e-9)
    # point ranks: best 96.80, apart 95.00, close 95.20 -> best 1, close 2, apart 3, worse 4
    assert ranked["rank"].to_dict() == {"best": 1, "close": 2, "apart": 3, "worse": 4}
    assert ranked.loc["best", "paired_rank"] == "1 (tied with 2)"
    assert ranked.loc["close", "paired_rank"] == "2 (tied with 1)"
    assert ranked.loc["worse", "paired_rank"] == "4"
    assert ranked.loc["apart", "paired_rank"] == "3" and ranked.loc["apart", "paired_test"] == ""
    assert (
        ranked.loc["best", "paired_group"] == ranked.loc["worse", "paired_group"] != ranked.loc["apart", "paired_group"]
    )
    rows = dict(
        (r["backbone"].split(" ")[0], r) for _, group in lb.table_rows(ranked.reset_index(), ACC) for r in group
    )
    assert rows["worse"]["p vs best"] == "< 0.001"
    assert rows["close"]["p vs best"] == f"{ranked.loc['close', 'paired_p']:.3f}"
    assert rows["best"]["p vs best"] == "best" and rows["apart"]["p vs best"] == ""
    assert rows["best"]["rank"] == "1 (tied with 2)"


def test_no_paired_test_says_why():
    frame = pd.DataFrame(
        [
            entry("a", [0.9, 0.8, 0.9]),
            entry("b", [0.5, 0.6], folds=[0, 1]),  # an unfinished run: other folds
            entry("c", [0.4, 0.5, 0.4]),
        ]
    )
    frame.at[2, "accuracy_3class_folds"] = None  # an evaluator that gives no per-fold values
    ranked = lb.rank(frame, ACC).set_index("backbone")
    assert "different folds" in ranked.loc["b", "paired_test"] and math.isnan(ranked.loc["b", "paired_p"])
    assert "no per-fold values" in ranked.loc["c", "paired_test"]
    assert ranked.loc["a", "paired_rank"] == "1"  # nothing shown tied when nothing was tested
    assert lb.paired_p_text(ranked.loc["c"]).startswith("n/a (no per-fold values")


def test_p_values_display():
    assert lb.format_p(0.0004) == "< 0.001"
    assert lb.format_p(0.001) == "0.001"
    assert lb.format_p(0.5) == "0.500"
    assert lb.format_p(float("nan")) == "n/a"


# --- from run directories --------------------------------------------------------------------------
def write_run(path, backbones: dict, shift: int = 0, fingerprint: str = "sha256:data-1"):
    """A hand-written run: every backbone's images right except the ``wrong`` ones; fold f holds the
    images i with (i + shift) % K == f."""
    store = RunStore(path)
    store.path.mkdir(parents=True)
    (store.path / "suite.toml").write_text('name = "pair"\n')
    keys = [CellKey("syn", b) for b in backbones]
    write_json(
        store.manifest_path,
        {
            "format": "benchbox-run/2",
            "suite": "pair",
            "suite_digest": "d1",
            "status": "complete",
            "seed": 1,
            "evaluators": ["paper"],
            "protocol": {},
            "protocol_label": "5-fold (stratified)",
            "datasets": {
                "syn": {
                    "dataset": "syn",
                    "plugin": "synthetic",
                    "classes": CLASSES,
                    "positive_class": "covid",
                    "class_counts": dict.fromkeys(CLASSES, N // 3),
                    "fingerprint": fingerprint,
                }
            },
            "cells": [
                {"dataset": "syn", "probe": "", "backbone": k.backbone, "plugin": "x/y", "folds": K, "options": {}}
                for k in keys
            ],
            "environment": {"cpu": "test cpu"},
        },
    )
    folds = (np.arange(N) + shift) % K
    store.write_split("syn", IDS, folds, "5-fold (stratified)")
    for key, wrong in zip(keys, backbones.values()):
        predicted = np.where(np.isin(np.arange(N), list(wrong)), (Y + 1) % 3, Y)
        probs = np.full((N, 3), 0.1)
        probs[np.arange(N), predicted] = 0.8
        for f in range(K):
            idx = np.flatnonzero(folds == f)
            store.write_record(
                fold_record(
                    key, f, CLASSES, [IDS[i] for i in idx], Y[idx], probs[idx], n_train=N - len(idx), suite_digest="d1"
                )
            )
    return store.path


def test_runs_on_the_same_folds_form_one_paired_group(tmp_path, registry):
    strong, mid = {0, 7}, {0, 7, 13}
    weak = {i for i in range(N) if i % 3}
    a = write_run(tmp_path / "a", {"strong": strong, "weak": weak})
    b = write_run(tmp_path / "b", {"mid": mid})  # another run, the same images and folds
    c = write_run(tmp_path / "c", {"other": {0, 7, 13, 20}}, shift=1)  # the same images, other folds
    d = write_run(tmp_path / "d", {"elsewhere": {0, 7, 13, 20, 30}}, fingerprint="sha256:data-2")  # other images
    entries, problems, metrics = lb.collect([a, b, c, d], registry)
    assert not problems
    ranked = lb.rank(entries, metrics["accuracy_3class"]).set_index("backbone")
    assert ranked["group"].nunique() == 1  # one composition: all four ranked together...
    groups = ranked["paired_group"]
    assert groups["strong"] == groups["weak"] == groups["mid"]  # ...but only these three are paired
    assert len({groups["strong"], groups["other"], groups["elsewhere"]}) == 3
    fold_acc = {
        name: [np.mean([i not in wrong for i in range(N) if i % K == f]) for f in range(K)]
        for name, wrong in (("strong", strong), ("mid", mid), ("weak", weak))
    }
    p_mid = corrected_p(np.subtract(fold_acc["strong"], fold_acc["mid"]))
    p_weak = corrected_p(np.subtract(fold_acc["strong"], fold_acc["weak"]))
    assert ranked.loc["mid", "paired_p_raw"] == pytest.approx(p_mid, rel=1e-9)
    assert ranked.loc["weak", "paired_p"] == pytest.approx(min(1, 2 * p_weak), rel=1e-9)
    assert ranked.loc["strong", "paired_rank"].startswith("1 (tied with ")
    assert ranked.loc["mid", "paired_rank"].endswith("(tied with 1)")
    assert "tied" not in ranked.loc["weak", "paired_rank"]
    assert ranked.loc["strong", "split_fingerprint"] == split_fingerprint(IDS, np.arange(N) % K, "5-fold (stratified)")
    # every format still renders; markdown and HTML show the tie and the p-values
    formats = {e.name: e.obj for e in registry.output_formats.values()}

    def render(fmt):
        return formats[fmt].render_leaderboard(ranked.reset_index(), metrics["accuracy_3class"])

    text = render("markdown")
    assert "p vs best" in text and "(tied with 1)" in text and "< 0.001" in text
    assert "(tied with 1)" in render("html")
    flat = json.loads(render("json"))
    assert {e["backbone"]: e["rank"] for e in flat}["weak"] == 5 and "paired_p" in flat[0]
    assert "paired_rank" in render("csv").splitlines()[0]


def test_a_run_records_the_split_fingerprint_in_the_manifest_and_the_split(tmp_path):
    from benchbox.define.suite import load_suite
    from benchbox.execute.runner import run_suite
    from benchbox.plugins import load_registry
    from conftest import write_suite
    from test_runner import SUITE, Events

    registry = load_registry(extra_plugins=[Events()])
    suite = load_suite(write_suite(tmp_path / "s.toml", SUITE.format(out=tmp_path / "runs")), registry)
    store = RunStore(run_suite(suite, registry).run_dir)
    split = store.read_split("syn")
    recorded = store.manifest()["datasets"]["syn"]["split_fingerprint"]
    assert recorded == split["fingerprint"] == split_fingerprint(split["ids"], split["fold"], split["protocol"])
    assert recorded == store.split_fingerprint("syn")


def test_a_repeated_run_stores_r_times_k_folds_and_the_leaderboard_pairs_them(tmp_path):
    from benchbox.define.suite import load_suite
    from benchbox.execute.runner import run_suite
    from benchbox.plugins import load_registry
    from conftest import write_suite
    from test_runner import SUITE, Events

    registry = load_registry(extra_plugins=[Events()])
    text = SUITE.format(out=tmp_path / "runs").replace("k = 4", "k = 3\nrepeats = 2")
    suite = load_suite(write_suite(tmp_path / "s.toml", text), registry)
    assert suite.protocol.label == "2x3-fold (stratified+grouped)"
    store = RunStore(run_suite(suite, registry).run_dir)
    split = store.read_split("syn")
    assert np.asarray(split["fold"]).shape == (2, len(split["ids"]))
    assert store.manifest()["datasets"]["syn"]["split_fingerprint"] == store.split_fingerprint("syn")
    records, problems = store.read_records()
    assert sorted(r.fold for r in records) == [0, 1, 2, 3, 4, 5] and not problems
    folds = np.asarray(split["fold"])
    for r in records:  # fold repeat*k + j tests exactly repeat's fold j, patient-grouped
        row = folds[r.fold // 3]
        assert sorted(r.test_ids) == sorted(np.asarray(split["ids"])[row == r.fold].tolist())
    entries, problems, _ = lb.collect([store.path], registry)
    assert sorted(entries.iloc[0]["fold_numbers"]) == [0, 1, 2, 3, 4, 5]
    assert any("repeated cross-validation tests each image 2 times" in p for p in problems)


def test_the_report_shows_each_data_sets_fingerprints_in_short_form(tmp_path):
    from benchbox.results.views.report import fingerprints_frame

    manifest = {
        "datasets": {
            "syn": {
                "images": 40,
                "fingerprint": "sha256:0123456789abcdef0123",
                "split_fingerprint": "sha256:fedcba98765432100",
            },
            "ext": {"images": 12, "fingerprint": "abcdef012345678", "split_fingerprint": None},
        }
    }
    frame = fingerprints_frame(manifest)
    assert frame.to_dict("records") == [
        {"Data": "syn", "Images": 40, "Data fingerprint": "0123456789ab", "Split fingerprint": "fedcba987654"},
        {"Data": "ext", "Images": 12, "Data fingerprint": "abcdef012345", "Split fingerprint": "(test only)"},
    ]
