"""Summarise a run once: stored fold records -> one row of metrics per cell, the metrics the
run's evaluators declare, and the report sections plugins add. Every view (terminal, markdown,
CSV, LaTeX, plots, leaderboards) renders a RunResult; none re-reads the records.

Needs only the run directory and the evaluator plugins: no model code.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchbox.contracts import MetricSpec, Section
from benchbox.errors import StoreError
from benchbox.execute.records import CellKey, FoldRecord, cell_index, data_index, group_by_cell
from benchbox.execute.store import RunStore
from benchbox.results.matrix import cross_dataset_matrix
from benchbox.results.statistics import mcnemar


@dataclass
class RunResult:
    """Everything the views of one run need, computed once."""

    run_dir: Path
    manifest: dict
    records: list[FoldRecord]
    summary: pd.DataFrame  # one row per cell: cell, dataset, probe, backbone, ..., declared metrics
    metrics: list[MetricSpec]  # declared by the run's evaluators, in order
    problems: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    evaluators: dict = field(default_factory=dict)  # name -> Evaluator object (their plots and sections)
    missing_evaluators: list[str] = field(default_factory=list)  # used by the run, not installed here
    refit_records: list[FoldRecord] = field(default_factory=list)  # cross-dataset refit models (not CV folds)
    cross: pd.DataFrame = field(default_factory=pd.DataFrame)  # the cross-dataset matrix, long form (matrix.py)
    cross_metrics: list[MetricSpec] = field(default_factory=list)  # the matrix's metrics, as their evaluators declare
    cross_evaluators: dict[str, str] = field(default_factory=dict)  # matrix metric -> the evaluator that computed it

    @property
    def cells(self) -> dict[CellKey, list[FoldRecord]]:
        return group_by_cell(self.records)

    @property
    def title(self) -> str:
        m = self.manifest
        epochs = (m.get("training") or {}).get("epochs")
        return f"{m.get('suite', '')}: {m.get('protocol_label', '')}" + (f", {epochs} epochs" if epochs else "")

    def data_meta(self, cell: CellKey) -> dict:
        return data_index(self.manifest).get(cell.data, {})

    def metric(self, name: str) -> MetricSpec | None:
        return next((m for m in self.metrics if m.name == name), None)


def declared_metrics(manifest: dict, registry, problems: list[str] | None = None) -> list[MetricSpec]:
    out, seen = [], set()
    for name in manifest.get("evaluators", []):
        entry = registry.evaluators.get(name)
        if entry is None:
            continue
        for spec in getattr(entry.obj, "metrics", ()) or ():
            if isinstance(spec, MetricSpec) and spec.name not in seen:
                seen.add(spec.name)
                out.append(spec)
            elif problems is not None and not isinstance(spec, MetricSpec):
                problems.append(f"evaluator {name!r} declares {spec!r}, not a benchbox.contracts.MetricSpec; ignored")
    return out


def summarise(store: RunStore, registry, with_sections: bool = True) -> RunResult:
    """Metrics per cell from the stored records, the problems found on the way, and sections."""
    manifest = store.manifest()
    records, problems = store.read_records(manifest)
    problems += [note for note in [store.suite_edited(manifest)] if note]
    refit_records = [r for r in records if r.refit]
    records = [r for r in records if not r.refit]
    if not records:
        raise StoreError(
            f"{store.path}: no usable fold records (folds/ is empty or every record is damaged); "
            "run the suite first" + (f" — {problems[0]}" if problems else "")
        )
    metrics = declared_metrics(manifest, registry, problems)
    missing = [name for name in manifest.get("evaluators", ["paper"]) if name not in registry.evaluators]
    problems += [f"evaluator {name!r} used by this run is not installed; its metrics are left out" for name in missing]
    cells_meta = cell_index(manifest)
    datasets = data_index(manifest)
    rows, evaluated = [], {}  # evaluated: (cell, evaluator) -> its figures, reused by the cross-dataset matrix
    for cell, recs in group_by_cell(records).items():
        meta = cells_meta.get(cell, {})
        dmeta = datasets.get(cell.data, {})
        classes = recs[0].classes or dmeta.get("classes") or []
        positive = dmeta.get("positive_class") or classes[0]
        expected = meta.get("folds")
        if expected is not None and len(recs) < expected:
            absent = sorted(set(range(expected)) - {r.fold for r in recs})  # not `missing`: the evaluators'
            problems.append(
                f"{cell}: folds {absent} missing ({len(recs)}/{expected} done); "
                "the figures below use the finished folds only"
            )
        row = {
            "cell": cell,
            "dataset": cell.dataset,
            "probe": cell.probe,
            "data": cell.label,
            "backbone": cell.backbone,
            "plugin": meta.get("plugin", ""),
            "framework": meta.get("framework", ""),
            # fine-tune, linear-probe or knn (benchbox/execute/schemes.py); runs before schemes fine-tuned
            "scheme": meta.get("scheme") or (meta.get("options") or {}).get("scheme") or "fine-tune",
            "folds": len(recs),
            "folds_expected": expected,
            "classes": list(classes),
            "positive_class": positive,
        }
        for name in manifest.get("evaluators", ["paper"]):
            entry = registry.evaluators.get(name)
            if entry is None:
                continue
            try:
                evaluated[(cell, name)] = entry.obj.evaluate(recs, classes, positive)
                row.update(evaluated[(cell, name)])
            except Exception as exc:  # one evaluator's bug must not hide the other metrics
                problems.append(f"evaluator {name!r} ({entry.origin}) failed on {cell}: {type(exc).__name__}: {exc}")
        retested = repeated_tests(recs)
        if retested > 1:
            problems.append(
                f"{cell}: repeated cross-validation tests each image {retested} times; the pooled figures average "
                f"the repeats, but their 95% intervals count every image {retested} times (too narrow by about "
                f"sqrt({retested})); judge differences by the fold spread and the leaderboard's paired tests"
            )
        degenerate = one_class_only(recs, classes)
        if degenerate:
            row["degenerate"] = degenerate
            problems.append(
                f"{cell}: degenerate model: it {degenerate}; its scores measure that class's share, not skill"
            )
        rates = [r.infer_images_per_sec for r in recs if np.isfinite(r.infer_images_per_sec)]
        row["train_seconds"] = float(sum(r.train_seconds for r in recs))
        row["infer_images_per_sec"] = float(np.median(rates)) if rates else float("nan")
        rows.append(row)
    primary = metrics[0].name if metrics else None
    if primary:
        mark_significance(rows, group_by_cell(records), primary)
    order = {c: i for i, c in enumerate(cells_meta)}
    rows.sort(key=lambda r: order.get(r["cell"], len(order)))
    result = RunResult(
        run_dir=store.path,
        manifest=manifest,
        records=records,
        summary=pd.DataFrame(rows),
        metrics=metrics,
        problems=problems,
        failures=store.read_failures(),
        evaluators={n: registry.evaluators[n].obj for n in manifest.get("evaluators", []) if n in registry.evaluators},
        refit_records=refit_records,
        missing_evaluators=missing,
    )
    strategy = crossing_strategy(manifest, registry)
    if strategy is not None:
        result.cross, result.cross_metrics, result.cross_evaluators = cross_dataset_matrix(
            manifest, records, refit_records, strategy, registry, problems, evaluated
        )
    if with_sections:
        result.sections = collect_sections(result, registry)
    return result


def crossing_strategy(manifest: dict, registry):
    """The run's split strategy when it had every model predict the suite's other data sets, else None."""
    entry = registry.split_strategies.get((manifest.get("protocol") or {}).get("kind"))
    return entry.obj if entry is not None and entry.obj.crosses_datasets else None


def collect_sections(result: RunResult, registry) -> list[Section]:
    """Sections from the run's evaluators, then from every plugin's report-sections hook."""
    out = []
    for name in result.manifest.get("evaluators", []):
        entry = registry.evaluators.get(name)
        if entry is None:
            continue
        try:
            out.extend(entry.obj.sections(result) or [])
        except Exception as exc:
            result.problems.append(
                f"evaluator {name!r} failed to build its report sections: {type(exc).__name__}: {exc}"
            )
    contributed, problems = registry.call_each("benchbox_report_sections", result=result)
    result.problems.extend(problems)
    for _, sections in contributed:
        out.extend(s for s in (sections or []) if isinstance(s, Section))
    return out


#: a class probability whose standard deviation across the test images is below this says nothing of them
NEARLY_CONSTANT = 1e-3


def one_class_only(records, classes) -> str:
    """What is wrong with a cell whose model predicted one class for every test image of a data set
    that has several ("" when it did not): such a model is ranked by its class's share alone."""
    predicted = np.concatenate([r.predicted for r in records]) if records else np.zeros(0, int)
    truth = np.concatenate([r.y_true for r in records]) if records else np.zeros(0, int)
    kinds = np.unique(predicted)
    if len(np.unique(truth)) < 2:
        return ""
    if len(kinds) == 1:
        k = int(kinds[0])
        name = classes[k] if 0 <= k < len(classes) else str(k)
        return f"predicts {name!r} for all {len(predicted)} test images"
    probabilities = np.concatenate([r.probabilities for r in records])
    spread = float(probabilities.std(axis=0).max()) if len(probabilities) > 1 else 1.0
    if spread < NEARLY_CONSTANT:
        return f"gives nearly the same scores to all {len(predicted)} test images (largest spread {spread:.1e})"
    return ""


def repeated_tests(records) -> int:
    """How many times the cell's most-tested image was tested (repeated CV: the repeats; else 1)."""
    from collections import Counter

    counts = Counter(i for r in records for i in r.test_ids)
    return max(counts.values()) if counts else 1


def correct_by_id(records) -> dict[str, bool]:
    """Sample id -> whether the cell's pooled prediction was right."""
    out = {}
    for r in records:
        out.update({i: bool(p == t) for i, p, t in zip(r.test_ids, r.predicted, r.y_true)})
    return out


def mark_significance(rows, cells, metric: str, alpha: float = 0.05) -> None:
    """Per data set: McNemar of every backbone against the best one (by ``metric``) on shared samples."""
    by_data = defaultdict(list)
    for row in rows:
        by_data[row["cell"].data].append(row)
    for ds_rows in by_data.values():
        scored = [r for r in ds_rows if isinstance(r.get(metric), (int, float)) and np.isfinite(r.get(metric))]
        if len(scored) < 2:
            continue
        best = max(scored, key=lambda r: r[metric])
        best_correct = correct_by_id(cells[best["cell"]])
        for row in ds_rows:
            row["vs_best_metric"] = metric
            if row is best:
                row["vs_best"] = "best"
                continue
            mine = correct_by_id(cells[row["cell"]])
            shared = sorted(set(mine) & set(best_correct))
            test = mcnemar([best_correct[i] for i in shared], [mine[i] for i in shared])
            row["vs_best_p"] = test["p_value"]
            row["vs_best"] = p_text(test["p_value"]) + ("*" if test["p_value"] < alpha else "")


def p_text(p: float) -> str:
    """A p-value as the tables show it: three decimals, and "p < 0.001" below that (never "p=0.000")."""
    return "p < 0.001" if p < 0.0005 else f"p={p:.3f}"
