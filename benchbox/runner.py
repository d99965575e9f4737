"""The runner: suite -> plan of cells -> folds -> fold records in the run store -> summary.

Everything that can fail before training (unavailable plugins, missing weights or data) is
checked first, so a run stops at once instead of after an hour. Finished folds are never redone.
"""

from __future__ import annotations

import importlib.util
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchbox.contracts import SampleSet
from benchbox.environment import environment
from benchbox.errors import BenchboxError, PluginError
from benchbox.executors import ExecutorConfig, Unit, make_executor
from benchbox.report import write_views
from benchbox.splitters import assign_folds, train_test_indices
from benchbox.store import RunStore, find_resumable
from benchbox.suite import Suite
from benchbox.summary import summarize


class Reporter:
    """Progress callbacks; the CLI draws rich progress bars, tests use this silent default."""

    def message(self, text: str) -> None: ...
    def cells_start(self, total_folds: int, done: int) -> None: ...
    def fold_start(self, dataset: str, backbone: str, fold: int, epochs: int) -> None: ...
    def epoch(self, done: int, total: int) -> None: ...
    def fold_end(self, record: dict) -> None: ...


@dataclass
class PreparedDataset:
    alias: str
    samples: SampleSet
    folds: np.ndarray | None  # None for a test-only (external) data set
    test_samples: SampleSet | None = None  # a test-only probe: the test images differ from the training ones


def fold_seed(seed: int, dataset: str, backbone: str, fold: int) -> int:
    """One seed per (suite seed, cell, fold): weight init and shuffling are reproducible."""
    key = [seed, zlib.crc32(dataset.encode()), zlib.crc32(backbone.encode()), fold]
    return int(np.random.SeedSequence(key).generate_state(1)[0] % (2**31 - 1))


def prepare_datasets(suite: Suite, registry, data_dir=None) -> dict[str, PreparedDataset]:
    used = {d for d, _ in suite.cells}
    external_only = {a for aliases in suite.external.values() for a in aliases} - used
    probed = {d for d in used if "@" in d}
    prepared = {}
    for alias in sorted((used | external_only) - probed):
        entry = suite.datasets[alias]
        plugin = registry.get("dataset", entry.plugin)
        options = dict(entry.options)
        samples = plugin.samples(options, suite.seed, data_dir or suite.data_dir)
        if options.get("positive_class") and alias not in external_only:
            if options["positive_class"] not in samples.classes:
                raise BenchboxError(f"{suite.path}: datasets.{alias}.positive_class: "
                                    f"{options['positive_class']!r} is not a class of this data set; "
                                    f"classes: {', '.join(samples.classes)}")
            samples.positive_class = options["positive_class"]
        folds = None if alias in external_only else \
            assign_folds(suite.protocol, samples.labels, samples.table["group"].to_numpy(), suite.seed)
        prepared[alias] = PreparedDataset(alias, samples, folds)
    for alias in sorted(probed):
        base, probe = alias.split("@", 1)
        prepared[alias] = probe_dataset(alias, prepared[base], probe, suite)
    return prepared


def probe_dataset(alias: str, base: PreparedDataset, probe: str, suite: Suite) -> PreparedDataset:
    """A probe's view of a data set: same samples and folds with transformed images, or the same
    images with the source as the label (folds drawn anew for the new labels)."""
    from dataclasses import replace

    from benchbox.probes import IMAGE_PROBES, transform

    s = base.samples
    options = suite.probes[probe]
    if probe in IMAGE_PROBES:
        probed = replace(s, load=lambda table, size: transform(probe, s.load(table, size), options),
                         fingerprint=f"{s.fingerprint}@{probe}")
        if options.get("apply", "train+test") == "test":
            return PreparedDataset(alias, s, base.folds, test_samples=probed)
        return PreparedDataset(alias, probed, base.folds)
    # source-as-label
    table = s.table.assign(label=s.table["source"].astype(str))
    classes = tuple(sorted(table["label"].unique()))
    if len(classes) < 2:
        raise BenchboxError(f"probe source-as-label on {base.alias!r}: every image comes from one source "
                            f"({classes[0]}); there is nothing to predict")
    positive_sources = s.table.loc[s.table["label"] == s.positive_class, "source"].value_counts()
    samples = SampleSet(table=table, classes=classes, positive_class=str(positive_sources.index[0]), load=s.load,
                        notes=list(s.notes), fingerprint=f"{s.fingerprint}@{probe}")
    folds = assign_folds(suite.protocol, samples.labels, table["group"].to_numpy(), suite.seed)
    return PreparedDataset(alias, samples, folds)


def check_backbones(suite: Suite, registry) -> None:
    """Availability and weights for every backbone, before any training."""
    problems = []
    for alias in {b for _, b in suite.cells}:
        entry = suite.backbones[alias]
        try:
            registry.get("backbone", entry.plugin).prepare(entry.options)
        except BenchboxError as exc:
            problems.append(f"backbones.{alias} ({entry.plugin}): {exc}")
    if problems:
        raise PluginError("cannot start the run:\n" + "\n".join(f"  - {p}" for p in problems))


def run_suite(suite: Suite, registry, run_dir=None, data_dir=None, new: bool = False,
              reporter: Reporter | None = None, executor_config: ExecutorConfig | None = None) -> Path:
    """Run (or resume) every cell of the suite; return the run directory."""
    reporter = reporter or Reporter()
    problems = []  # weights and data are both checked, so one attempt reports everything missing
    try:
        check_backbones(suite, registry)
    except BenchboxError as exc:
        problems.append(str(exc))
    try:
        datasets = prepare_datasets(suite, registry, data_dir)
    except BenchboxError as exc:
        problems.append(str(exc))
    if problems:
        raise BenchboxError("\n".join(problems))
    for alias, ds in datasets.items():
        for note in ds.samples.notes:
            if "shortfall" in note or "skipped" in note or "missing" in note:
                reporter.message(f"warning: {alias}: {note}")
    for name in suite.evaluators:
        registry.get("evaluator", name)

    if run_dir is None and not new:
        run_dir = find_resumable(suite.output_dir, suite.name, suite.digest)
        if run_dir is not None:
            reporter.message(f"resuming unfinished run {run_dir}")
    if run_dir is None:
        run_dir = suite.output_dir / f"{suite.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        while run_dir.exists():
            run_dir = Path(f"{run_dir}x")
    store = RunStore(run_dir)
    if store.manifest_path.exists():
        manifest = store.manifest()
        if manifest.get("suite_digest") != suite.digest:
            raise BenchboxError(f"{run_dir} holds a run of a different suite (or an edited one); "
                                "start a new run with --new or choose another --run-dir")
    else:
        manifest = _manifest(suite, registry, datasets)
        store.create(manifest, suite.text)
    for alias, ds in datasets.items():
        if ds.folds is None:
            continue
        previous = store.read_split(alias)
        ids = ds.samples.table["id"].tolist()
        if previous and (previous["ids"] != ids or previous["fold"] != ds.folds.tolist()):
            raise BenchboxError(f"{run_dir}: the folds of dataset {alias!r} differ from the stored split "
                                "(the data changed since the run started); start a new run with --new")
        if not previous:
            store.write_split(alias, ids, ds.folds, suite.protocol.label)
    registry.pm.hook.benchbox_run_start(run_dir=run_dir, manifest=manifest)

    n_folds = suite.protocol.n_folds
    done = sum(store.has_record(d, b, f) for d, b in suite.cells for f in range(n_folds))
    reporter.cells_start(len(suite.cells) * n_folds, done)
    started = time.time()
    units, images, externals = plan_units(suite, datasets, store)
    failed = []

    def on_done(unit, out):
        record = make_record(unit, out, datasets, externals.get(unit.images_key, {}))
        missing = [a for a in externals.get(unit.images_key, {}) if a not in out.external]
        if missing:
            reporter.message(f"warning: {unit.plugin} returned no predictions for external data set(s) {missing}")
        store.write_record(record)
        store.clear_failure(unit.dataset, unit.backbone, unit.fold)
        reporter.fold_end(record)
        registry.pm.hook.benchbox_fold_end(run_dir=run_dir, record=record)

    def on_failed(unit, error):
        failed.append((unit, error))
        store.write_failure(unit.dataset, unit.backbone, unit.fold, error)
        reporter.message(f"failed: {unit.dataset} x {unit.backbone} fold {unit.fold}: {error.splitlines()[-1]}")

    executor = make_executor(executor_config or ExecutorConfig(), registry)
    executor.run(units, images, externals, on_done, on_failed, reporter)
    summary, problems = summarize(store, registry)
    from benchbox.breakdown import sections

    write_views(run_dir, summary, f"{suite.name}", problems, sections(store.read_records()[0], store.manifest(), summary))
    if importlib.util.find_spec("matplotlib") is not None:
        from benchbox.plots import write_plots

        write_plots(run_dir, store.read_records()[0], summary, suite.name)
    elapsed = time.time() - started
    status = "complete" if not failed else "incomplete"
    finished_now = len(units) - len(failed)
    store.update_manifest(status=status, finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                          last_session_seconds=round(elapsed, 2),
                          executor=(executor_config or ExecutorConfig()).label,
                          folds_per_hour=round(3600 * finished_now / elapsed, 1) if elapsed > 0 and finished_now else None,
                          failed_units=[f"{u.dataset} x {u.backbone} fold {u.fold}" for u, _ in failed])
    registry.pm.hook.benchbox_run_end(run_dir=run_dir, summary=summary)
    return Path(run_dir)


def plan_units(suite: Suite, datasets: dict[str, PreparedDataset], store: RunStore):
    """The folds still to train, and the image arrays they share (one per data set and input size)."""
    units, images, externals = [], {}, {}
    for ds_alias, bb_alias in suite.cells:
        ds, entry = datasets[ds_alias], suite.backbones[bb_alias]
        todo = [f for f in range(suite.protocol.n_folds) if not store.has_record(ds_alias, bb_alias, f)]
        if not todo:
            continue
        key = (ds_alias, entry.input_size, tuple(suite.external.get((ds_alias, bb_alias), [])))
        test_key = key + ("test",) if ds.test_samples is not None else key
        if key not in images:
            images[key] = ds.samples.load(ds.samples.table, entry.input_size)
            if ds.test_samples is not None:
                images[test_key] = ds.test_samples.load(ds.test_samples.table, entry.input_size)
            externals[key] = {a: datasets[a].samples.load(datasets[a].samples.table, entry.input_size)
                              for a in suite.external.get((ds_alias, bb_alias), [])}
        labels = ds.samples.labels
        # engines key per-image work (the prefix cache) by these ids: they name the pixels, so a probe's
        # images (and a test-only probe's test images) get ids of their own
        raw_ids = ds.samples.table["id"].astype(str).to_numpy()
        ids = np.char.add(f"{ds_alias}/", raw_ids)
        test_ids = np.char.add(f"{ds_alias}/test/", raw_ids) if ds.test_samples is not None else ids
        for fold in todo:
            train_idx, test_idx = train_test_indices(ds.folds, fold)
            units.append(Unit(dataset=ds_alias, backbone=bb_alias, plugin=entry.plugin, fold=fold, images_key=key,
                              test_images_key=test_key,
                              train_idx=train_idx, test_idx=test_idx,
                              job_fields={"y_train": labels[train_idx], "num_classes": len(ds.samples.classes),
                                          "options": entry.options, "training": suite.training,
                                          "seed": fold_seed(suite.seed, ds_alias, bb_alias, fold),
                                          "train_ids": ids[train_idx].tolist(), "test_ids": test_ids[test_idx].tolist()}))
    return units, images, externals


def make_record(unit: Unit, out, datasets: dict[str, PreparedDataset], x_external: dict) -> dict:
    """The stored record of one finished fold: plain JSON values only."""
    ds = datasets[unit.dataset]
    t = ds.samples.table
    test_idx = unit.test_idx
    return {"dataset": unit.dataset, "backbone": unit.backbone, "fold": unit.fold, "seed": unit.job_fields["seed"],
            "classes": list(ds.samples.classes), "test_ids": t["id"].iloc[test_idx].astype(str).tolist(),
            "test_indices": test_idx.tolist(), "y_true": ds.samples.labels[test_idx].tolist(),
            "test_groups": t["group"].iloc[test_idx].astype(str).tolist(),
            "test_sources": t["source"].iloc[test_idx].astype(str).tolist(),
            "probabilities": np.asarray(out.probabilities, dtype=float).tolist(),
            "n_train": int(len(unit.train_idx)), "n_test": int(len(test_idx)),
            "train_seconds": out.train_seconds, "predict_seconds": out.predict_seconds, "info": out.info,
            "external": {a: {"ids": datasets[a].samples.table["id"].astype(str).tolist(),
                             "labels": datasets[a].samples.table["label"].astype(str).tolist(),
                             "sources": datasets[a].samples.table["source"].astype(str).tolist(),
                             "probabilities": np.asarray(out.external[a], dtype=float).tolist()}
                         for a in x_external if a in out.external}}


def _manifest(suite: Suite, registry, datasets: dict[str, PreparedDataset]) -> dict:
    ds_meta = {}
    for alias, ds in datasets.items():
        t = ds.samples.table
        base, _, probe = alias.partition("@")
        ds_meta[alias] = {"plugin": suite.datasets[base].plugin + (f"@{probe}" if probe else ""),
                          "options": suite.datasets[base].options, "probe": probe or None, "probe_of": base if probe else None,
                          "classes": list(ds.samples.classes), "positive_class": ds.samples.positive_class,
                          "images": int(len(t)), "patients": int(t["group"].nunique()),
                          "class_counts": {str(k): int(v) for k, v in t["label"].value_counts().items()},
                          "fingerprint": ds.samples.fingerprint, "notes": list(ds.samples.notes),
                          "class_sources": {str(c): {str(k): int(v) for k, v in
                                                     t.loc[t["label"] == c, "source"].value_counts().items()}
                                            for c in ds.samples.classes},
                          "external_only": ds.folds is None}
    cells = []
    for d, b in suite.cells:
        entry = suite.backbones[b]
        backbone = registry.backbones[entry.plugin].obj
        cells.append({"dataset": d, "backbone": b, "plugin": entry.plugin, "framework": backbone.framework,
                      "options": entry.options, "folds": suite.protocol.n_folds,
                      "external": suite.external.get((d, b), [])})
    return {"suite": suite.name, "suite_path": str(suite.path), "suite_digest": suite.digest,
            "suite_as_run": suite.raw, "seed": suite.seed, "protocol": suite.protocol.__dict__,
            "protocol_label": suite.protocol.label, "training": suite.training.__dict__,
            "evaluators": suite.evaluators, "datasets": ds_meta, "probes": suite.probes,
            "probe_thresholds": suite.thresholds, "cells": cells,
            "environment": environment(), "status": "running",
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
