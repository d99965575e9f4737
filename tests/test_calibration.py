"""The ``calibration`` evaluator on fold records built by hand, and in a hand-written run directory."""

import math

import numpy as np
import pytest

from benchbox.execute.records import CellKey, FoldRecord
from benchbox_paper_metrics import CalibrationMetrics

CLASSES = ["covid", "normal", "pneumonia"]


def record(fold, y, probs, cell=CellKey("syn", "net")):
    y = np.asarray(y)
    return FoldRecord(
        cell=cell,
        fold=fold,
        seed=fold,
        classes=CLASSES,
        test_ids=[f"f{fold}i{i}" for i in range(len(y))],
        y_true=y,
        probabilities=np.asarray(probs, dtype=float),
        test_groups=[f"f{fold}i{i}" for i in range(len(y))],
        test_sources=["a"] * len(y),
        n_train=10,
        train_seconds=1.0,
        predict_seconds=0.1,
        infer_images_per_sec=100.0,
    )


FOLD0 = ([0, 1], [[0.8, 0.1, 0.1], [0.3, 0.6, 0.1]])  # Brier (0.06 + 0.26) / 2 = 0.16
FOLD1 = ([2, 0], [[0.1, 0.1, 0.8], [0.2, 0.7, 0.1]])  # Brier (0.06 + (0.64 + 0.49 + 0.01)) / 2 = 0.60


def test_declares_lower_is_better_metrics():
    specs = {m.name: m for m in CalibrationMetrics.metrics}
    assert set(specs) == {"brier", "ece"}
    assert not specs["brier"].higher_is_better and not specs["ece"].higher_is_better


def test_pooled_and_per_fold_by_hand():
    out = CalibrationMetrics().evaluate([record(0, *FOLD0), record(1, *FOLD1)], CLASSES, "covid")
    assert out["brier_folds"] == pytest.approx([0.16, 0.60])
    assert out["brier"] == pytest.approx((0.06 + 0.26 + 0.06 + 1.14) / 4)  # pooled over the four images
    assert out["brier_fold_mean"] == pytest.approx(0.38)
    assert out["brier_fold_std"] == pytest.approx(np.std([0.16, 0.60], ddof=1))
    # fold 0: conf 0.8 right, 0.6 right -> bins (0.73, 0.80] and (0.53, 0.60]: |1 - 0.8|/2 + |1 - 0.6|/2 = 0.3
    # fold 1: conf 0.8 right, 0.7 wrong -> |1 - 0.8|/2 + |0 - 0.7|/2 = 0.45
    assert out["ece_folds"] == pytest.approx([0.3, 0.45])
    # pooled: 0.8 (twice, both right), 0.6 right, 0.7 wrong -> (2/4)(0.2) + (1/4)(0.4) + (1/4)(0.7) = 0.375
    assert out["ece"] == pytest.approx(0.375)
    counts = [b["count"] for b in out["reliability"]]
    assert sum(counts) == 4 and len(counts) == 15


def test_one_fold_has_no_spread_and_bad_shapes_are_named():
    out = CalibrationMetrics().evaluate([record(0, *FOLD0)], CLASSES, "covid")
    assert math.isnan(out["ece_fold_std"]) and out["ece_fold_mean"] == pytest.approx(out["ece"])
    bad = record(0, [0, 1], [[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(ValueError, match="one probability per class"):
        CalibrationMetrics().evaluate([bad], CLASSES, "covid")


def test_in_a_run_directory_report_section_and_plot(tmp_path, registry):
    """A hand-written run with the calibration evaluator: the summary, the report section, the plot."""
    from benchbox.execute.store import RunStore, write_json
    from benchbox.results.summary import summarise

    assert "calibration" in registry.evaluators  # registered through the paper-metrics entry point
    store = RunStore(tmp_path / "run")
    store.path.mkdir(parents=True)
    (store.path / "suite.toml").write_text('name = "cal"\n')
    keys = [CellKey("syn", "sharp"), CellKey("syn", "soft")]
    write_json(
        store.manifest_path,
        {
            "format": "benchbox-run/2",
            "suite": "cal",
            "suite_digest": "d1",
            "status": "complete",
            "seed": 1,
            "evaluators": ["paper", "calibration"],
            "protocol": {},
            "protocol_label": "2-fold",
            "datasets": {"syn": {"dataset": "syn", "classes": CLASSES, "positive_class": "covid"}},
            "cells": [
                {"dataset": k.dataset, "probe": "", "backbone": k.backbone, "plugin": "x/y", "folds": 2} for k in keys
            ],
        },
    )
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    for key, temperature in zip(keys, (0.2, 3.0)):  # the same logits, made over- and under-confident
        for fold in range(2):
            idx = np.flatnonzero(np.arange(len(y)) % 2 == fold)
            logits = rng.normal(0, 1, (len(idx), 3))
            logits[np.arange(len(idx)), y[idx]] += 1.0
            z = np.exp(logits / temperature)
            rec = record(fold, y[idx], z / z.sum(1, keepdims=True), key)
            rec.suite_digest = "d1"
            store.write_record(rec)
    result = summarise(store, registry)
    assert not [p for p in result.problems if "calibration" in p]
    rows = {r["backbone"]: r for _, r in result.summary.iterrows()}
    for name in ("sharp", "soft"):
        recs = result.cells[CellKey("syn", name)]
        from benchbox.results.pairstats import brier_score

        pooled_y = np.concatenate([r.y_true for r in recs])
        pooled_p = np.concatenate([r.probabilities for r in recs])
        assert rows[name]["brier"] == pytest.approx(brier_score(pooled_y, pooled_p))
        assert len(rows[name]["ece_folds"]) == 2
    titles = [s.title for s in result.sections]
    assert "Reliability: syn x sharp" in titles and "Reliability: syn x soft" in titles
    sharp = next(s for s in result.sections if s.title == "Reliability: syn x sharp")
    assert sharp.table["Images"].sum() == len(y)
    assert {"Confidence", "Mean confidence", "Accuracy", "Gap"} <= set(sharp.table.columns)
    pytest.importorskip("matplotlib")
    written = result.evaluators["calibration"].plots(result, tmp_path)
    assert [p.name for p in written] == ["reliability__syn.png"] and written[0].stat().st_size > 1000
