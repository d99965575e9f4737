"""The runner: the stages of `benchbox run`, in order, each one testable alone.

    check (plugins, weights)  -> plan (sample tables, folds; benchbox/define/plan.py)
    -> session (run directory: lock, manifest, resume checks; benchbox/execute/session.py)
    -> execute (executors through the harness; benchbox/execute/executors.py, harness.py)
    -> summarise once (benchbox/results/summary.py) -> render (benchbox/results/views/)

Everything that can fail before training (unavailable plugins, missing weights or data) is
checked first, so a run stops at once instead of after an hour. Finished folds are never redone.
"""

from __future__ import annotations

import time
from pathlib import Path

from benchbox.define.plan import PreparedData, Unit, load_images, plan_units, prepare_data, units_per_cell
from benchbox.define.suite import Suite
from benchbox.errors import BenchboxError, PluginError
from benchbox.execute.executors import ExecutorChoice, choose_executor
from benchbox.execute.harness import call_plugin
from benchbox.execute.records import DataKey, FoldRecord
from benchbox.execute.schemes import scheme_of
from benchbox.execute.session import Session, open_session
from benchbox.execute.trackers import ActiveTrackers
from benchbox.results.summary import RunResult, summarise
from benchbox.results.views.report import write_views


class Reporter:
    """Progress callbacks; the CLI draws rich progress bars, tests use this silent default."""

    def message(self, text: str) -> None: ...
    def session(self, run_dir: Path) -> None: ...
    def cells_start(self, total_folds: int, done: int) -> None: ...
    def fold_start(self, cell, fold: int | str, epochs: int) -> None: ...  # str: e.g. a refit
    def epoch(self, done: int, total: int) -> None: ...
    def fold_end(self, record: FoldRecord) -> None: ...
    def failure_detail(self, where: str, detail: str) -> None: ...  # a failed fold's traceback (CLI: --verbose)


def check_backbones(suite: Suite, registry) -> None:
    """Availability and weights (files opened and matched to the network) for every backbone."""
    problems = []
    for alias in dict.fromkeys(c.backbone for c in suite.cells):
        entry = suite.backbones[alias]
        try:
            backbone = registry.get("backbone", entry.plugin)
        except BenchboxError as exc:
            problems.append(f"backbones.{alias}: {exc}")
            continue
        try:  # the error names the plugin, the method and backbones.ALIAS
            call_plugin(entry.plugin, "prepare", f"backbones.{alias}", backbone.prepare, entry.options)
        except BenchboxError as exc:
            problems.append(str(exc))
    if problems:
        raise PluginError("cannot start the run:\n" + "\n".join(f"  - {p}" for p in problems))


def preflight(suite: Suite, registry, data_dir=None) -> dict[DataKey, PreparedData]:
    """Every check that needs no training, all at once: plugins, weights, data, evaluators."""
    problems = []
    for name in suite.evaluators:
        try:
            registry.get("evaluator", name)
        except BenchboxError as exc:
            problems.append(str(exc))
    try:
        check_backbones(suite, registry)
    except BenchboxError as exc:
        problems.append(str(exc))
    data = {}
    try:
        data = prepare_data(suite, registry, data_dir)
    except BenchboxError as exc:
        problems.append(str(exc))
    if problems:
        raise BenchboxError("\n".join(problems))
    return data


def run_suite(
    suite: Suite,
    registry,
    run_dir=None,
    data_dir=None,
    new: bool = False,
    reporter: Reporter | None = None,
    executor: ExecutorChoice | None = None,
) -> RunResult:
    """Run (or resume) every cell of the suite; return the run's summarised result."""
    reporter = reporter or Reporter()
    data = preflight(suite, registry, data_dir)
    for key, ds in data.items():
        for warning in ds.samples.warnings:
            reporter.message(f"warning: {key.label}: {warning}")
    session = open_session(suite, registry, data, run_dir, new)
    reporter.session(session.run_dir)
    try:
        for note in session.notes:
            reporter.message(note)
        return execute(suite, registry, session, data, reporter, executor or choose_executor(registry, suite.executor))
    finally:
        session.close()


def execute(
    suite: Suite,
    registry,
    session: Session,
    data: dict[DataKey, PreparedData],
    reporter: Reporter,
    executor: ExecutorChoice,
) -> RunResult:
    store, run_dir = session.store, session.run_dir
    # the suite's [tracking] table travels to the hooks with the manifest, but is not stored in it
    manifest = {**session.manifest, "tracking": dict(suite.tracking)}
    registry.call_lifecycle("benchbox_run_start", run_dir=run_dir, manifest=manifest)
    trackers = ActiveTrackers.of(registry, suite.tracking)
    trackers.start(run_dir, manifest)

    def done(cell, fold):
        return store.has_record(cell, fold, suite.digest)

    units = plan_units(suite, data, done)
    total = sum(units_per_cell(suite, data, cell) for cell in suite.cells)
    reporter.cells_start(total, total - len(units))
    started = time.time()
    images, externals = load_images(units, data)
    failed: list[tuple[Unit, str]] = []

    def on_done(unit: Unit, outcome) -> None:
        record = make_record(unit, outcome, data, suite.digest)
        artefacts = getattr(outcome, "artefacts", None) or {}
        store.write_record(record, artefacts)
        store.clear_failure(unit.cell, unit.fold)
        reporter.fold_end(record)
        for kept in artefacts.values():  # a fold inspector's word on this fold (e.g. no maps, and why)
            if kept.warning:
                reporter.message(f"warning: {unit.where}: {kept.warning}")
        cache = record.info.get("embedding_cache") if isinstance(record.info, dict) else None
        if isinstance(cache, dict) and cache.get("warning"):  # a frozen scheme's cache could not be written
            reporter.message(f"warning: {unit.where}: {cache['warning']}")
        registry.call_lifecycle("benchbox_fold_end", run_dir=run_dir, record=record)
        trackers.fold_end(run_dir, record)

    def on_failed(unit: Unit, error: str, detail: str | None) -> None:
        failed.append((unit, error))
        store.write_failure(unit.cell, unit.fold, error)
        if detail:
            store.log(f"{unit.where}: {error}\n{detail}")
        if not error.startswith("skipped"):
            reporter.message(f"failed: {error}" + (f" (traceback in {run_dir / 'benchbox.log'})" if detail else ""))
        if detail:
            reporter.failure_detail(unit.where, detail)

    executor.run(units, images, externals, on_done, on_failed, reporter, registry)
    elapsed = time.time() - started
    finished_now = len(units) - len(failed)
    store.update_manifest(
        status="complete" if not failed else "incomplete",
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        last_session_seconds=round(elapsed, 2),
        executor=executor.label,
        folds_per_hour=round(3600 * finished_now / elapsed, 1) if elapsed > 0 and finished_now else None,
        failed_units=[unit.where for unit, _ in failed],
    )
    result = summarise(store, registry) if store.has_records() else None
    if result is not None:
        write_views(result, registry)
    registry.call_lifecycle("benchbox_run_end", run_dir=run_dir, result=result)
    trackers.end(run_dir, result)
    if result is None:
        errors = [e for _, e in failed if not e.startswith("skipped")] or [e for _, e in failed]
        raise BenchboxError(
            f"no fold finished in {run_dir}: "
            + "; ".join(errors[:3])
            + f". Fix the cause and rerun the same command to resume (tracebacks in {run_dir / 'benchbox.log'})."
        )
    return result


def make_record(unit: Unit, outcome, data: dict[DataKey, PreparedData], digest: str) -> FoldRecord:
    """The stored record of one finished fold."""
    from benchbox.execute.records import ExternalPrediction

    ds = data[unit.cell.data]
    t = ds.samples.table
    idx = unit.test_idx
    external = {}
    for alias, probs in outcome.external.items():
        et = data[DataKey(alias)].samples.table
        external[alias] = ExternalPrediction(
            ids=et["id"].astype(str).tolist(),
            labels=et["label"].astype(str).tolist(),
            sources=et["source"].astype(str).tolist(),
            probabilities=probs,
            groups=et["group"].astype(str).tolist(),
        )
    return FoldRecord(
        cell=unit.cell,
        fold=unit.fold,
        seed=unit.job_fields["seed"],
        classes=list(ds.samples.classes),
        test_ids=t["id"].iloc[idx].astype(str).tolist(),
        y_true=ds.samples.labels[idx],
        probabilities=outcome.probabilities,
        test_groups=t["group"].iloc[idx].astype(str).tolist(),
        test_sources=t["source"].iloc[idx].astype(str).tolist(),
        n_train=int(len(unit.train_idx)),
        train_seconds=outcome.train_seconds,
        predict_seconds=outcome.predict_seconds,
        infer_images_per_sec=outcome.infer_images_per_sec,
        info={
            **outcome.info,
            "scheme": scheme_of(unit.job_fields["options"]),
            **({"refit": True} if unit.refit else {}),
        },
        external=external,
        suite_digest=digest,
    )


def rerender(run_dir: Path, registry) -> RunResult:
    """Summarise a stored run again and rewrite its views (`benchbox report`). Views that would lose a
    column (an evaluator the run used is not installed here) are left as they are: the stored report
    keeps what it showed, and the re-rendered tables go only where the user asked."""
    from benchbox.execute.store import RunStore

    result = summarise(RunStore(run_dir), registry)
    if result.missing_evaluators:
        names = ", ".join(repr(n) for n in result.missing_evaluators)
        result.problems.append(
            f"{run_dir}: its report files (report.html, report.md, summary.csv, plots/) were left as they are, "
            f"since they show the metrics of evaluator(s) {names}; install the plugin(s) and run `benchbox report` "
            "again to refresh them"
        )
    else:
        write_views(result, registry)
    return result
