"""From stored fold records to one row of metrics per dataset x backbone cell.

Needs only the run directory (records + manifest) and the evaluator plugins: no model code.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd

from benchbox.errors import StoreError
from benchbox.store import RunStore


def group_records(records):
    cells = defaultdict(list)
    for r in records:
        cells[(r["dataset"], r["backbone"])].append(r)
    return {k: sorted(v, key=lambda r: r["fold"]) for k, v in cells.items()}


def summarize(store: RunStore, registry) -> tuple[pd.DataFrame, list[str]]:
    """Metrics per cell from the stored records, and the problems found on the way."""
    manifest = store.manifest()
    records, problems = store.read_records()
    if not records:
        raise StoreError(f"{store.path}: no fold records yet (folds/ is empty); run the suite first")
    rows = []
    cells_meta = {(c["dataset"], c["backbone"]): c for c in manifest.get("cells", [])}
    for (ds, bb), recs in group_records(records).items():
        meta = cells_meta.get((ds, bb), {})
        dmeta = manifest.get("datasets", {}).get(ds, {})
        classes = recs[0].get("classes") or dmeta.get("classes")
        positive = dmeta.get("positive_class", classes[0])
        expected = meta.get("folds")
        if expected is not None and len(recs) < expected:
            missing = sorted(set(range(expected)) - {r["fold"] for r in recs})
            problems.append(f"{ds} x {bb}: folds {missing} missing ({len(recs)}/{expected} done); "
                            "the figures below use the finished folds only")
        row = {"dataset": ds, "backbone": bb, "plugin": meta.get("plugin", ""),
               "framework": meta.get("framework", ""), "folds": len(recs), "folds_expected": expected,
               "classes": list(classes), "positive_class": positive}
        for name in manifest.get("evaluators", ["paper"]):
            if name not in registry.evaluators:
                problems.append(f"evaluator {name!r} used by this run is not installed; its metrics are left out")
                continue
            row.update(registry.evaluators[name].obj.evaluate(recs, classes, positive))
        n_test = sum((r.get("info") or {}).get("predict_images", len(r["y_true"])) for r in recs)
        predict_s = sum(r.get("predict_seconds", 0.0) for r in recs)
        row["train_seconds"] = sum(r.get("train_seconds", 0.0) for r in recs)
        row["infer_images_per_sec"] = n_test / predict_s if predict_s > 0 else float("nan")
        rows.append(row)
    mark_significance(rows, group_records(records))
    order = {tuple(c): i for i, c in enumerate((c["dataset"], c["backbone"]) for c in manifest.get("cells", []))}
    rows.sort(key=lambda r: order.get((r["dataset"], r["backbone"]), len(order)))
    return pd.DataFrame(rows), problems


def correct_by_id(records) -> dict[str, bool]:
    """Sample id -> whether the cell's pooled prediction was right."""
    out = {}
    for r in records:
        pred = np.asarray(r["probabilities"]).argmax(axis=1)
        ids = r.get("test_ids") or [str(i) for i in r.get("test_indices", range(len(pred)))]
        out.update({i: bool(p == t) for i, p, t in zip(ids, pred, r["y_true"])})
    return out


def mark_significance(rows, cells, metric: str = "accuracy_3class", alpha: float = 0.05) -> None:
    """Per dataset: McNemar of every backbone against the best one (by ``metric``) on shared samples."""
    from benchbox.statistics import mcnemar

    by_dataset = defaultdict(list)
    for row in rows:
        by_dataset[row["dataset"]].append(row)
    for ds, ds_rows in by_dataset.items():
        scored = [r for r in ds_rows if np.isfinite(r.get(metric, np.nan))]
        if len(scored) < 2:
            continue
        best = max(scored, key=lambda r: r[metric])
        best_correct = correct_by_id(cells[(ds, best["backbone"])])
        for row in ds_rows:
            if row is best:
                row["vs_best"] = "best"
                continue
            mine = correct_by_id(cells[(ds, row["backbone"])])
            shared = sorted(set(mine) & set(best_correct))
            test = mcnemar([best_correct[i] for i in shared], [mine[i] for i in shared])
            row["vs_best_p"] = test["p_value"]
            row["vs_best"] = f"p={test['p_value']:.3f}" + ("*" if test["p_value"] < alpha else "")
