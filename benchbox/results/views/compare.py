"""Paired comparison of two backbones evaluated on the same samples of one run:
McNemar's test on their correct/incorrect predictions, and the difference of their positive-class
ROC AUC with a patient-level bootstrap interval."""

from __future__ import annotations

import numpy as np

from benchbox.errors import BenchboxError
from benchbox.execute.records import DataKey, data_index, group_by_cell
from benchbox.execute.store import RunStore
from benchbox.results.statistics import bootstrap_ci, mcnemar, positive_auc


def _aligned(records):
    """Sample id -> (true label, probabilities, patient)."""
    out = {}
    for r in records:
        for i, t, p, g in zip(r.test_ids, r.y_true, r.probabilities, r.test_groups):
            out[i] = (t, p, g)
    return out


def compare(run_dir, a: str, b: str, dataset: str | None = None, n_boot: int = 1000, seed: int = 0) -> dict:
    store = RunStore(run_dir)
    manifest = store.manifest()
    records, _ = store.read_records(manifest)
    cells = {(c.dataset, c.backbone): recs for c, recs in group_by_cell(records).items() if not c.probe}
    datasets = sorted({d for d, bb in cells if bb == a} & {d for d, bb in cells if bb == b})
    backbones = sorted({bb for _, bb in cells})
    for name in (a, b):
        if name not in backbones:
            raise BenchboxError(
                f"{run_dir}: no records for backbone {name!r}; backbones in this run: {', '.join(backbones)}"
            )
    if dataset is None:
        if len(datasets) != 1:
            raise BenchboxError(f"{a} and {b} share data sets {datasets or 'none'}; choose one with --dataset")
        dataset = datasets[0]
    elif dataset not in datasets:
        raise BenchboxError(
            f"{a} and {b} were not both evaluated on {dataset!r}; shared: {', '.join(datasets) or 'none'}"
        )
    ra, rb = _aligned(cells[(dataset, a)]), _aligned(cells[(dataset, b)])
    shared = sorted(set(ra) & set(rb))
    if not shared:
        raise BenchboxError(f"{a} and {b} have no test samples in common on {dataset}")
    meta = data_index(manifest)[DataKey(dataset)]
    classes = meta["classes"]
    pos = classes.index(meta["positive_class"])
    y = np.array([ra[i][0] for i in shared])
    pa = np.array([ra[i][1] for i in shared], dtype=float)
    pb = np.array([rb[i][1] for i in shared], dtype=float)
    groups = np.array([ra[i][2] for i in shared])
    correct_a, correct_b = pa.argmax(1) == y, pb.argmax(1) == y
    test = mcnemar(correct_a, correct_b)
    diff = positive_auc(y, pa, pos) - positive_auc(y, pb, pos)
    lo, hi = bootstrap_ci(
        lambda i: positive_auc(y[i], pa[i], pos) - positive_auc(y[i], pb[i], pos), groups, n_boot, seed
    )
    return {
        "dataset": dataset,
        "a": a,
        "b": b,
        "n": len(shared),
        "accuracy_a": float(correct_a.mean()),
        "accuracy_b": float(correct_b.mean()),
        "mcnemar": test,
        "auc_a": positive_auc(y, pa, pos),
        "auc_b": positive_auc(y, pb, pos),
        "auc_difference": diff,
        "auc_difference_ci": (lo, hi),
    }
