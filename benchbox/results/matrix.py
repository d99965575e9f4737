"""The cross-dataset matrix of a run whose split strategy crosses data sets: one row per backbone x
(trained on A, tested on B), scored by evaluators.

The strategy declares the matrix's metrics and the evaluator that supplies each
(``SplitStrategy.matrix_metrics``); this module only turns each cell's predictions into fold records
and hands them to those evaluators, so the core computes no metric of its own. A cell's records:

- Diagonal (A = B): A's own cross-validation, its fold records as they are (test folds pooled, as the
  comparison table scores them; the run's own evaluations are reused).
- Off the diagonal, k-fold: each of A's fold models predicted all of B; their probabilities are
  averaged into one record, so every image of B counts once (pooling the k predictions would count it
  k times and make the intervals k times too confident).
- Off the diagonal, refit: the one model trained on all of A.

``<metric>_fold_std`` is the spread of the single models (the folds, on the diagonal), from each
evaluator's ``evaluate_each``. Classes are matched by name: a record of B is in A's classes, then any
class of B that A never saw (a class the model gives no probability, so it is never predicted).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from benchbox.contracts import MetricSpec
from benchbox.execute.records import CellKey, ExternalPrediction, FoldRecord, cell_index, data_index, group_by_cell


class CrossMatrix(NamedTuple):
    table: pd.DataFrame  # long form: backbone, trained_on, tested_on, how, models, images, positives, metrics...
    metrics: list[MetricSpec]  # the strategy's matrix metrics whose evaluator is installed, in its order
    supplied_by: dict[str, str]  # metric -> the evaluator that computed it


def matrix_evaluators(strategy, registry, problems: list[str]) -> tuple[list[MetricSpec], dict[str, str]]:
    """The specs of the strategy's matrix metrics and the evaluator of each; one it cannot have is left
    out, with a problem saying why."""
    specs, supplied_by = [], {}
    for metric, name in dict(strategy.matrix_metrics).items():
        entry = registry.evaluators.get(name)
        spec = next((s for s in getattr(entry.obj, "metrics", ()) if s.name == metric), None) if entry else None
        if entry is None:
            problems.append(
                f"cross-dataset matrix: evaluator {name!r}, which split strategy {strategy.name!r} asks for "
                f"{metric!r}, is not installed; {metric} is left out of the matrix"
            )
        elif spec is None:
            problems.append(
                f"cross-dataset matrix: evaluator {name!r} declares no metric {metric!r}, which split strategy "
                f"{strategy.name!r} asks it for; {metric} is left out of the matrix"
            )
        else:
            specs.append(spec)
            supplied_by[metric] = name
    return specs, supplied_by


def cross_dataset_matrix(
    manifest: dict, records, refit_records, strategy, registry, problems: list[str], evaluated: dict | None = None
) -> CrossMatrix:
    """The matrix of a run (see the module's docstring). ``evaluated``: (cell, evaluator name) -> what that
    evaluator gave for the cell's cross-validation, reused for the diagonal."""
    specs, supplied_by = matrix_evaluators(strategy, registry, problems)
    scorer = _Scorer(specs, supplied_by, registry, problems)
    evaluated = evaluated or {}
    datasets = data_index(manifest)
    protocol = manifest.get("protocol") or {}
    k, repeats = protocol.get("k"), protocol.get("repeats") or 1
    k = f"{repeats}x{k}" if isinstance(repeats, int) and repeats > 1 else k
    refit = bool(protocol.get("refit"))
    cells = {c: recs for c, recs in group_by_cell(records).items() if not c.probe}
    refits = {r.cell: r for r in refit_records if not r.cell.probe}
    order = [a for a in (manifest.get("datasets") or {}) if not (manifest["datasets"][a].get("probe"))]
    ran = {c.backbone for c in list(cells) + list(refits)}
    backbones = [b for b in dict.fromkeys(c.backbone for c in cell_index(manifest)) if b in ran]
    backbones += sorted(ran - set(backbones))  # a record the manifest does not list (never in practice)

    rows = []
    for backbone in backbones:
        for a in order:
            key = CellKey(a, backbone)
            recs = cells.get(key, [])
            if not recs and key not in refits:
                continue
            meta = datasets.get(key.data) or {}
            classes = list((recs[0] if recs else refits[key]).classes or meta.get("classes") or [])
            positive = meta.get("positive_class") or classes[0]
            if positive not in classes:
                problems.append(f"cross-dataset: {a}'s positive class {positive!r} is not among its classes")
                continue
            base = {"backbone": backbone, "trained_on": a, "positive_class": positive}
            if recs:
                y = np.concatenate([r.y_true for r in recs])
                cached = {
                    name: evaluated[(key, name)] for name in set(supplied_by.values()) if (key, name) in evaluated
                }
                rows.append(
                    {
                        **base,
                        "tested_on": a,
                        "how": f"within: {k}-fold CV, test folds pooled",
                        "models": len(recs),
                        "images": int(len(y)),
                        "positives": int((y == classes.index(positive)).sum()),
                        **scorer.score(f"{a} x {backbone}", recs, recs, classes, positive, cached),
                    }
                )
            sources = [refits[key]] if refit and key in refits else ([] if refit else recs)
            for b in order:
                parts = [(r, r.external[b]) for r in sources if b in r.external] if b != a else []
                if not parts:
                    continue
                labels = np.asarray(parts[0][1].labels)
                if not (labels == positive).any():
                    problems.append(
                        f"cross-dataset {a} -> {b}: {b} has no images of {a}'s positive class {positive!r}; "
                        "sensitivity and AUC are undefined"
                    )
                names, singles, mean = external_records(parts, classes)
                how = "refit on all of the data set" if refit else f"mean of {len(parts)} fold models"
                rows.append(
                    {
                        **base,
                        "tested_on": b,
                        "how": f"external: {how}",
                        "models": len(parts),
                        "images": int(len(labels)),
                        "positives": int((labels == positive).sum()),
                        **scorer.score(f"{a} -> {b} x {backbone}", [mean], singles, names, positive, {}),
                    }
                )
    return CrossMatrix(pd.DataFrame(rows), specs, supplied_by)


def external_records(
    parts: list[tuple[FoldRecord, ExternalPrediction]], classes: list[str]
) -> tuple[list[str], list[FoldRecord], FoldRecord]:
    """Each model's predictions of another data set as a fold record in the trained-on classes (then the
    other set's own classes, which get probability 0), and the record of their mean probability."""
    labels = list(parts[0][1].labels)
    names = list(classes) + [c for c in dict.fromkeys(labels) if c not in classes]
    index = {c: i for i, c in enumerate(names)}
    y_true = np.array([index[c] for c in labels], dtype=np.int64)
    unseen = len(names) - len(classes)

    def record(source: FoldRecord, prediction: ExternalPrediction, probabilities: np.ndarray) -> FoldRecord:
        return FoldRecord(
            cell=source.cell,
            fold=source.fold,
            seed=source.seed,
            classes=names,
            test_ids=list(prediction.ids),
            y_true=y_true,
            probabilities=np.pad(probabilities, ((0, 0), (0, unseen))),
            test_groups=list(prediction.groups or prediction.ids),
            test_sources=list(prediction.sources),
            n_train=source.n_train,
            train_seconds=0.0,
            predict_seconds=0.0,
            infer_images_per_sec=float("nan"),
        )

    probabilities = [np.asarray(p.probabilities, dtype=float) for _, p in parts]
    singles = [record(r, p, q) for (r, p), q in zip(parts, probabilities)]
    return names, singles, record(*parts[0], np.mean(probabilities, axis=0))


class _Scorer:
    """Asks each evaluator of the matrix for its metrics of one cell."""

    def __init__(self, specs: list[MetricSpec], supplied_by: dict[str, str], registry, problems: list[str]):
        self.specs, self.supplied_by, self.problems = specs, supplied_by, problems
        self.entries = {name: registry.evaluators[name] for name in dict.fromkeys(supplied_by.values())}

    def score(self, where: str, records, models, classes, positive, cached: dict) -> dict:
        """Each metric with its interval, then the spread of ``models`` (each scored alone)."""
        figures, each = {}, {}
        for name, entry in self.entries.items():
            try:
                figures[name] = cached.get(name) or entry.obj.evaluate(records, classes, positive)
                each[name] = entry.obj.evaluate_each(models, classes, positive) if len(models) > 1 else []
            except Exception as exc:  # one evaluator's bug must not hide the other figures
                self.problems.append(
                    f"evaluator {name!r} ({entry.origin}) failed on the cross-dataset cell {where}: "
                    f"{type(exc).__name__}: {exc}"
                )
                figures[name], each[name] = {}, []
        out = {}
        for spec in self.specs:
            got = figures[self.supplied_by[spec.name]]
            for key in (spec.name, f"{spec.name}_ci_low", f"{spec.name}_ci_high"):
                out[key] = got.get(key, float("nan"))
        for spec in self.specs:
            out[f"{spec.name}_fold_std"] = _sd([e.get(spec.name) for e in each[self.supplied_by[spec.name]]])
        return out


def _sd(values) -> float:
    """Sample standard deviation of the finite values (nan for fewer than two)."""
    v = [float(x) for x in values if isinstance(x, (int, float)) and np.isfinite(x)]
    return float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")
