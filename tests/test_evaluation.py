"""Intervals, paired tests, paper-style reports, plots and leaderboards — from stored records only."""

import json
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pytest

from benchbox.execute.store import RunStore, write_json
from benchbox.results.statistics import (
    auc_of_counts,
    bootstrap_ci,
    bootstrap_ci_counts,
    macro_f1,
    macro_f1_of_counts,
    mcnemar,
    per_class_prf,
    positive_auc,
    wilson,
)
from conftest import run_batch, run_cli

CLASSES = ["covid", "pneumonia", "normal"]


def test_wilson_known_values():
    assert wilson(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson(10, 10)[1] == pytest.approx(1.0)
    assert all(np.isnan(wilson(0, 0)))


def test_mcnemar_worked_examples():
    # exact: 1 vs 7 discordant pairs -> p = 2 * P(X <= 1), X ~ Bin(8, 0.5) = 2 * 9 / 256
    a = [True] * 1 + [False] * 7 + [True] * 5
    b = [False] * 1 + [True] * 7 + [True] * 5
    r = mcnemar(a, b)
    assert (r["only_a"], r["only_b"], r["method"]) == (1, 7, "exact")
    assert r["p_value"] == pytest.approx(18 / 256)
    # large: 121 vs 59 discordant pairs (Wikipedia's example), continuity-corrected chi-square 20.67
    a = [True] * 121 + [False] * 59
    b = [False] * 121 + [True] * 59
    r = mcnemar(a, b)
    assert r["statistic"] == pytest.approx((62 - 1) ** 2 / 180) and r["p_value"] == pytest.approx(5.45e-6, rel=0.01)
    assert mcnemar([True, False], [True, False])["p_value"] == 1.0


def test_bootstrap_is_seeded_and_resamples_patients():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    score = y + rng.normal(0, 1, 200)
    probs = np.stack([1 - score, score], 1)
    groups = np.repeat(np.arange(50), 4)
    stat = lambda i: positive_auc(y[i], probs[i], 1)  # noqa: E731
    a = bootstrap_ci(stat, groups, n_boot=200, seed=3)
    assert a == bootstrap_ci(stat, groups, n_boot=200, seed=3)
    assert a != bootstrap_ci(stat, groups, n_boot=200, seed=4)
    assert a[0] < positive_auc(y, probs, 1) < a[1]
    # one patient per image gives a narrower interval than 4 correlated images per patient would not:
    # here we only check that resampling whole groups keeps group members together
    seen = []
    bootstrap_ci(lambda i: seen.append(sorted(i)) or 0.0, np.array([0, 0, 1, 1]), n_boot=5, seed=0)
    assert all(s in ([0, 0, 1, 1], [0, 1, 2, 3], [2, 2, 3, 3]) or len(s) == 4 for s in seen)
    assert all(s.count(0) == s.count(1) for s in seen)


@pytest.mark.parametrize("n, k, patients", [(90, 3, 45), (40, 2, 40), (200, 9, 120), (1500, 3, 900)])
def test_bootstrap_of_counts_gives_the_same_intervals_bit_for_bit(n, k, patients):
    """The clinical evaluator's intervals (all resamples at once) equal the resample-by-resample ones: the same
    draws, the same values, ties in the scores and resamples without a positive included."""
    rng = np.random.default_rng(n)
    y = rng.integers(0, k, n)
    probs = rng.dirichlet(np.ones(k), n)
    probs[: n // 3] = np.round(probs[: n // 3], 1)  # tied scores
    pred = probs.argmax(1)
    pred[:5] = 0
    y[: n // 20 + 1] = k - 1
    groups = np.array([f"p{v}" for v in rng.integers(0, patients, n)])
    for seed in (0, 7):
        for positive in (0, k - 1):
            slow = bootstrap_ci(lambda i, p=positive: positive_auc(y[i], probs[i], p), groups, 300, seed)
            assert slow == bootstrap_ci_counts(lambda c, p=positive: auc_of_counts(y, probs, p, c), groups, 300, seed)
        slow = bootstrap_ci(lambda i: macro_f1(y[i], pred[i], k), groups, 300, seed)
        assert slow == bootstrap_ci_counts(lambda c: macro_f1_of_counts(y, pred, k, c), groups, 300, seed)
    rare = np.zeros(n, dtype=int)
    rare[0] = 1  # most resamples lack the positive: the interval is nan in both
    slow = bootstrap_ci(lambda i: positive_auc(rare[i], probs[i, :2], 1), groups, 100, 0)
    fast = bootstrap_ci_counts(lambda c: auc_of_counts(rare, probs[:, :2], 1, c), groups, 100, 0)
    assert np.isnan(slow).all() == np.isnan(fast).all() and (np.isnan(slow).all() or slow == fast)


def test_per_class_and_macro_f1_with_a_class_never_predicted():
    cm = np.array([[2, 0, 0], [1, 0, 1], [0, 0, 3]])
    p, r, f = per_class_prf(cm)
    assert p.tolist() == pytest.approx([2 / 3, 0.0, 0.75]) and r.tolist() == pytest.approx([1.0, 0.0, 1.0])
    assert f[1] == 0.0
    y_true = [0, 0, 1, 1, 2, 2, 2]
    y_pred = [0, 0, 0, 2, 2, 2, 2]
    assert macro_f1(y_true, y_pred, 3) == pytest.approx(np.mean([0.8, 0.0, 6 / 7]))


def test_auc_is_nan_without_positives():
    assert np.isnan(positive_auc([1, 2], np.full((2, 3), 1 / 3), 0))


@pytest.fixture
def stored_run(tmp_path):
    """A run directory written by hand: two backbones, two folds, no model code anywhere."""

    def make(name, backbones, seed=0, size=(64, 64), counts=(6, 6, 6)):
        rng = np.random.default_rng(seed)
        store = RunStore(tmp_path / name)
        ids = [f"img{i}" for i in range(sum(counts))]
        y = np.repeat([0, 1, 2], counts)
        fold = np.arange(len(y)) % 2
        cells = [
            {
                "dataset": "d",
                "backbone": b,
                "plugin": f"torch/{b}",
                "framework": "torch",
                "options": {"input_size": list(size), "weights": "none"},
                "folds": 2,
            }
            for b in backbones
        ]
        # the layout benchbox 0.1 wrote (format benchbox-run/1, schema-1 records): old runs must keep rendering
        write_json(
            store.manifest_path,
            {
                "format": "benchbox-run/1",
                "suite": name,
                "suite_digest": name,
                "status": "complete",
                "seed": 0,
                "evaluators": ["paper", "clinical"],
                "protocol": {"grouped": True},
                "protocol_label": "2-fold (stratified+grouped)",
                "datasets": {
                    "d": {
                        "plugin": "synthetic",
                        "classes": CLASSES,
                        "positive_class": "covid",
                        "class_counts": dict(zip(CLASSES, counts)),
                    }
                },
                "cells": cells,
                "environment": {"cpu": "test cpu", "benchbox": "0.1.0"},
                "started_at": "2026-11-25T10:00:00",
            },
        )
        for k, b in enumerate(backbones):
            skill = 2.0 + 2 * k
            for f in range(2):
                idx = np.flatnonzero(fold == f)
                logits = rng.normal(0, 1, (len(idx), 3))
                logits[np.arange(len(idx)), y[idx]] += skill
                probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
                write_json(
                    store.path / "folds" / f"d__{b}__fold{f:02d}.json",
                    {
                        "dataset": "d",
                        "backbone": b,
                        "fold": f,
                        "classes": CLASSES,
                        "test_ids": [ids[i] for i in idx],
                        "test_indices": idx.tolist(),
                        "test_groups": [f"p{i // 2}" for i in idx],
                        "y_true": y[idx].tolist(),
                        "probabilities": probs.tolist(),
                        "train_seconds": 1.0,
                        "predict_seconds": 0.1,
                    },
                )
        return store.path

    return make


def test_report_renders_from_records_only_and_writes_plots(stored_run):
    run = stored_run("r1", ["weak", "strong"])
    # markdown, then LaTeX, through the CLI's entry point in one process that never imports model code
    code = (
        "import sys; from benchbox.cli import main\n"
        "for fmt in ('markdown', 'latex'):\n"
        "    try:\n"
        f"        main(['report', {str(run)!r}, '--format', fmt])\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code in (0, None), exc.code\n"
        "    print('=== END OF REPORT ===', flush=True)\n"
        "assert not any(m in sys.modules for m in ('tensorflow', 'torch', 'keras')), 'model code imported'\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    markdown, latex, _ = res.stdout.split("=== END OF REPORT ===")
    assert "## Comparison" in markdown and "Table 4" in markdown and "[" in markdown and "pred covid" in markdown
    assert "best" in markdown
    for plot in ("confusion__d__weak.png", "confusion__d__strong.png", "roc__d.png", "folds__d.png"):
        assert (run / "plots" / plot).stat().st_size > 1000
    assert "\\toprule" in latex and "\\toprule" not in markdown


def test_each_cell_gets_its_own_confusion_matrix_from_one_shared_figure(stored_run):
    """The paper evaluator redraws one figure per class list for every cell: each PNG shows its own cell (the
    counts differ, so do the files) and no figure is left open."""
    from benchbox.execute.runner import rerender
    from benchbox.plugins import load_registry
    from benchbox.results.views.plots import pyplot

    run = stored_run("r1", ["weak", "strong"])
    result = rerender(run, load_registry())
    weak, strong = (run / "plots" / f"confusion__d__{b}.png" for b in ("weak", "strong"))
    assert weak.stat().st_size > 1000 and strong.stat().st_size > 1000
    assert weak.read_bytes() != strong.read_bytes()
    rows = {r["backbone"]: r for _, r in result.summary.iterrows()}
    assert rows["weak"]["confusion"] != rows["strong"]["confusion"]
    assert pyplot().get_fignums() == []


def test_report_survives_damaged_and_missing_records(stored_run):
    run = stored_run("r1", ["weak", "strong"])
    (run / "folds" / "d__weak__fold01.json").write_text("{broken")
    res = run_cli("report", run, "--format", "markdown")
    assert res.returncode == 0
    assert "d__weak__fold01.json" in res.stdout and "folds [1] missing" in res.stdout and "| strong" in res.stdout


def test_compare_command(stored_run):
    run = stored_run("r1", ["weak", "strong"])
    res = run_cli("compare", run, "weak", "strong", "--n-boot", "200")
    assert res.returncode == 0, res.stderr
    assert "McNemar" in res.stdout and "AUC difference" in res.stdout
    bad = run_cli("compare", run, "weak", "nope")
    assert bad.returncode == 1 and "backbones in this run: strong, weak" in bad.stderr


class TableParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.images, self.external = [], 0, []
        self._row = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr":
            self._row = []
        if tag == "img":
            self.images += attrs["src"].startswith("data:image/png;base64,")
        for key in ("src", "href"):
            if key in attrs and attrs[key].startswith("http"):
                self.external.append(attrs[key])

    def handle_data(self, data):
        if self._row is not None and data.strip():
            self._row.append(data.strip())

    def handle_endtag(self, tag):
        if tag == "tr":
            self.rows.append(self._row)
            self._row = None


@pytest.mark.slow
def test_leaderboard_ranks_groups_and_writes_a_self_contained_page(stored_run, tmp_path):
    a = stored_run("r1", ["weak", "strong"], seed=0)
    b = stored_run("r2", ["mid"], seed=1)
    c = stored_run("r3", ["other"], seed=2, size=(32, 32))  # another input size: not comparable
    res = run_cli("leaderboard", a, b, c, "--metric", "sensitivity", "--format", "json")
    assert res.returncode == 0, res.stderr
    entries = json.loads(res.stdout)
    groups = {e["group"] for e in entries}
    assert len(groups) == 2
    main = sorted((e for e in entries if "64x64" in e["group"]), key=lambda e: e["rank"])
    # ranks compare the values as shown (scaled, declared digits); a tie shares its rank ("1, 1, 3")
    shown = [round(100 * e["sensitivity"], 2) for e in main]  # Sensitivity %, 2 digits
    assert [e["rank"] for e in main] == [1 + sum(s > v for s in shown) for v in shown], shown
    assert main[0]["sensitivity"] >= main[1]["sensitivity"] >= main[2]["sensitivity"]
    assert next(e for e in entries if e["backbone"] == "other")["rank"] == 1  # ranked alone

    out = tmp_path / "lb.html"
    # the plots the page embeds, written by `report` (three runs, one process)
    written = run_batch({str(run): (["report", run, "--format", "csv"], {}) for run in (a, b, c)})
    assert all(res.returncode == 0 for res in written.values()), [res.stderr for res in written.values()]
    res = run_cli("leaderboard", a, b, c, "--format", "html", "--output", out)
    assert res.returncode == 0, res.stderr
    parser = TableParser()
    parser.feed(out.read_text())
    body = [r for r in parser.rows if r and r[0] != "rank"]
    assert len(body) == 4 and {r[1].split(" ")[0] for r in body} == {"weak", "strong", "mid", "other"}
    assert parser.images >= 3 and parser.external == []
    assert "<script>" in out.read_text()


def test_leaderboard_of_nothing_is_a_clear_error(tmp_path):
    res = run_cli("leaderboard", tmp_path)
    assert res.returncode == 1 and "not a benchbox run" in res.stderr


def test_auc_equals_scikit_learn_including_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    probs = np.round(rng.dirichlet([1, 1, 1], 300), 1)  # rounding makes many ties
    assert positive_auc(y, probs, 0) == pytest.approx(roc_auc_score(y == 0, probs[:, 0]))


def test_evaluate_each_gives_every_records_own_figures_without_the_bootstrap():
    """The cross-dataset matrix's spread across models: one evaluation per record, the intervals skipped."""
    from types import SimpleNamespace

    from benchbox_paper_metrics import ClinicalMetrics, PaperMetrics

    rng = np.random.default_rng(2)
    records = []
    for fold in range(3):
        y = rng.integers(0, 3, 40)
        probs = rng.dirichlet([1, 1, 1], 40)
        probs[np.arange(40), y] += 0.3 * fold  # each fold model a little better than the last
        probs /= probs.sum(1, keepdims=True)
        groups = [f"p{fold}-{i // 2}" for i in range(40)]
        records.append(
            SimpleNamespace(y_true=y, predicted=probs.argmax(1), probabilities=probs, fold=fold, test_groups=groups)
        )
    clinical = ClinicalMetrics()
    each = clinical.evaluate_each(records, CLASSES, "covid")
    alone = [clinical.evaluate([r], CLASSES, "covid") for r in records]
    for mine, full in zip(each, alone):
        assert set(mine) == {"auc", "macro_f1", "balanced_accuracy"}  # no interval: no bootstrap was drawn
        assert all(mine[k] == pytest.approx(full[k]) for k in mine)
    assert each[0]["auc"] < each[2]["auc"]
    # an evaluator that does not override it is asked once per record
    assert PaperMetrics().evaluate_each(records, CLASSES, "covid")[1]["sensitivity"] == pytest.approx(
        PaperMetrics().evaluate([records[1]], CLASSES, "covid")["sensitivity"]
    )
