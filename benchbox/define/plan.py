"""Planning a run: which data sets each cell needs, their sample tables and folds, and the units
of work (cell x fold) still to train. Sample tables are read here; pixels are not (``load_images``
is the one place that decodes, and only for units that will run).
"""

from __future__ import annotations

import traceback
import zlib
from dataclasses import dataclass, replace

import numpy as np

from benchbox.contracts import InspectRequest, SampleSet
from benchbox.data.images import to_channels
from benchbox.data.probes import IMAGE_PROBES, transform
from benchbox.data.splitters import fold_count, train_test_indices
from benchbox.define.suite import Suite
from benchbox.define.tables import (
    channel_problems,
    cross_dataset_problems,
    folds_of,
    needed,
    read_tables,
    scheme_fold_problems,
)
from benchbox.errors import BenchboxError
from benchbox.execute.records import CellKey, DataKey


@dataclass
class PreparedData:
    """A data set as the run feeds it: samples, fold of each sample (None: test-only)."""

    key: DataKey
    samples: SampleSet
    folds: np.ndarray | None
    test_samples: SampleSet | None = None  # a test-only probe: the test images differ from the training ones


@dataclass
class Unit:
    """One fold of one cell, with everything needed to build its FoldJob from shared arrays."""

    cell: CellKey
    plugin: str
    fold: int
    images_key: tuple  # (data key, input size): the shared image array
    test_images_key: tuple  # the array test images come from (differs for a test-only probe)
    external_key: tuple  # the test-only data sets' arrays for this cell
    train_idx: np.ndarray
    test_idx: np.ndarray
    job_fields: dict  # y_train, num_classes, options, training, seed, ids
    refit: bool = False  # cross-dataset refit: trained on the whole data set; only its external predictions count

    @property
    def where(self) -> str:
        return f"{self.cell} fold {self.fold}"


def fold_seed(seed: int, cell: CellKey, fold: int) -> int:
    """One seed per (suite seed, cell, fold): weight init and shuffling are reproducible."""
    data_name = f"{cell.dataset}@{cell.probe}" if cell.probe else cell.dataset  # as benchbox 0.1 derived it
    key = [seed, zlib.crc32(data_name.encode()), zlib.crc32(cell.backbone.encode()), fold]
    return int(np.random.SeedSequence(key).generate_state(1)[0] % (2**31 - 1))


def needed_data(suite: Suite) -> tuple[list[DataKey], list[str]]:
    """Data keys the cells train on, and data set aliases used only as external test sets (pure)."""
    return needed(suite.cells, suite.external)


def prepare_data(suite: Suite, registry, data_dir=None) -> dict[DataKey, PreparedData]:
    """Sample tables and folds of every data set the suite needs (no pixels are decoded)."""
    trained, external = needed_data(suite)
    bases = [a for a in dict.fromkeys(k.dataset for k in trained) if a not in external]
    tables, problems = read_tables(
        suite.datasets, registry, suite.seed, data_dir or suite.data_dir, suite.path, bases, external
    )
    prepared: dict[DataKey, PreparedData] = {}
    for alias, samples in tables.items():
        folds = None
        if alias not in external:
            try:
                folds = folds_of(suite.protocol, samples, suite.seed, alias)
            except BenchboxError as exc:
                problems.append(str(exc))
                continue
        prepared[DataKey(alias)] = PreparedData(DataKey(alias), samples, folds)
    problems += cross_dataset_problems(suite.path, suite.protocol, suite.cells, suite.external, tables)
    problems += channel_problems(suite.path, suite.cells, suite.backbones, registry, tables)
    folds = {key.dataset: ds.folds for key, ds in prepared.items() if ds.folds is not None}
    problems += scheme_fold_problems(suite.path, suite.cells, suite.backbones, folds)
    if problems:
        raise BenchboxError("\n".join(problems))
    for key in trained:
        if key.probe:
            prepared[key] = probe_data(key, prepared[DataKey(key.dataset)], suite)
    return prepared


def probe_data(key: DataKey, base: PreparedData, suite: Suite) -> PreparedData:
    """A probe's view of a data set: same samples and folds with transformed images, or the same
    images with the source as the label (folds drawn anew for the new labels)."""
    s, probe = base.samples, key.probe
    options = suite.probes[probe]
    if probe in IMAGE_PROBES:
        probed = replace(
            s,
            load=lambda table, size: transform(probe, s.load(table, size), options),
            fingerprint=f"{s.fingerprint}+{probe}",
        )
        if options.get("apply", "train+test") == "test":
            return PreparedData(key, s, base.folds, test_samples=probed)
        return PreparedData(key, probed, base.folds)
    # source-as-label
    table = s.table.assign(label=s.table["source"].astype(str))
    classes = tuple(sorted(table["label"].unique()))
    if len(classes) < 2:
        raise BenchboxError(
            f"probe source-as-label on {base.key.dataset!r}: every image comes from one source "
            f"({classes[0]}); there is nothing to predict — remove the probe from [probes]"
        )
    positive_sources = s.table.loc[s.table["label"] == s.positive_class, "source"].value_counts()
    samples = SampleSet(
        table=table,
        classes=classes,
        positive_class=str(positive_sources.index[0]),
        load=s.load,
        notes=list(s.notes),
        fingerprint=f"{s.fingerprint}+{probe}",
        channels=s.channels,
    )
    return PreparedData(key, samples, folds_of(suite.protocol, samples, suite.seed, key.label))


def plan_units(suite: Suite, data: dict[DataKey, PreparedData], done) -> list[Unit]:
    """The folds still to train (``done(cell, fold)`` says which are stored), in the suite's order."""
    units = []
    for cell in suite.cells:
        ds, entry = data[cell.data], suite.backbones[cell.backbone]
        n_folds = fold_count(ds.folds)
        todo = [f for f in range(n_folds) if not done(cell, f)]
        externals = tuple(suite.external.get(cell, []))
        key = (cell.data, entry.input_size)
        test_key = key + ("test",) if ds.test_samples is not None else key
        labels = ds.samples.labels
        # engines key per-image work (the prefix cache) by these ids: they name the pixels, so a probe's
        # images (and a test-only probe's test images) get ids of their own
        raw_ids = ds.samples.table["id"].astype(str).to_numpy()
        groups = ds.samples.table["group"].astype(str).to_numpy()
        ids = np.char.add(f"{cell.data.slug}/", raw_ids)
        test_ids = np.char.add(f"{cell.data.slug}/test/", raw_ids) if ds.test_samples is not None else ids
        refit = n_folds if suite.protocol.refit else None
        for fold in todo + ([refit] if refit is not None and not cell.probe and not done(cell, refit) else []):
            if fold == refit:  # the whole data set; its "test fold" is one batch of it, for the throughput timing
                train_idx = np.arange(len(labels))
                test_idx = train_idx[: max(1, min(len(labels), suite.training.batch_size))]
            else:
                train_idx, test_idx = train_test_indices(ds.folds, fold)
            units.append(
                Unit(
                    cell=cell,
                    plugin=entry.plugin,
                    fold=fold,
                    images_key=key,
                    test_images_key=test_key,
                    # externals come in the trained-on set's channels (a gray set repeated to RGB for an RGB-trained
                    # model, an RGB set as its luma for a gray-trained one), so the channels are part of the key
                    external_key=(externals, entry.input_size, ds.samples.channels),
                    train_idx=train_idx,
                    test_idx=test_idx,
                    job_fields={
                        "y_train": labels[train_idx],
                        "num_classes": len(ds.samples.classes),
                        "options": entry.options,
                        "training": suite.training,
                        "seed": fold_seed(suite.seed, cell, fold),
                        "train_ids": ids[train_idx].tolist(),
                        "test_ids": test_ids[test_idx].tolist(),
                        # patients of the training fold: a linear probe's inner CV groups by them
                        "train_groups": groups[train_idx].tolist(),
                        # the suite's fold inspectors: read by the harness only (the request holds the test labels)
                        "inspect": InspectRequest(
                            tuple(suite.inspectors.values()),
                            labels[test_idx],
                            tuple(ds.samples.classes),
                            cell.backbone,
                        )
                        if suite.inspectors and fold != refit  # not the refit: its "test fold" is training data
                        else None,
                    },
                    refit=fold == refit,
                )
            )
    return units


def units_per_cell(suite: Suite, data: dict[DataKey, PreparedData], cell: CellKey) -> int:
    """Models a cell trains: its data set's folds, and the refit model where the protocol has one."""
    return fold_count(data[cell.data].folds) + (suite.protocol.refit and not cell.probe)


def load_images(units: list[Unit], data: dict[DataKey, PreparedData]) -> tuple[dict, dict]:
    """Decode once every image array the units share: {images key: array}, {external key: {alias: array}}."""
    images, externals = {}, {}
    for u in units:
        ds = data[u.cell.data]
        size = u.images_key[1]
        if u.images_key not in images:
            images[u.images_key] = _load(ds.samples, size, u.cell.data.label)
        if u.test_images_key not in images:
            images[u.test_images_key] = _load(ds.test_samples, size, u.cell.data.label)
    decoded = {}
    for u in units:  # after the trained-on arrays: a data set also trained on (cross-dataset) is decoded once
        size = u.images_key[1]
        channels = u.external_key[2] if len(u.external_key) > 2 else 1
        if u.external_key not in externals:
            arrays = {}
            for a in u.external_key[0]:
                if (DataKey(a), size) in images:
                    arr = images[(DataKey(a), size)]
                else:
                    if (a, size) not in decoded:
                        decoded[(a, size)] = _load(data[DataKey(a)].samples, size, a)
                    arr = decoded[(a, size)]
                arrays[a] = to_channels(arr, channels)
            externals[u.external_key] = arrays
    return images, externals


def _load(samples: SampleSet, size, label: str) -> np.ndarray:
    try:
        arr = np.asarray(samples.load(samples.table, size))
    except BenchboxError:
        raise
    except Exception as exc:
        raise BenchboxError(
            f"data set {label}: loading its images failed: {type(exc).__name__}: {exc}", detail=traceback.format_exc()
        ) from exc
    colour = samples.channels == 3
    expected = (len(samples.table), *size) + ((3,) if colour else ())
    if arr.dtype != np.uint8 or arr.shape != expected:
        raise BenchboxError(
            f"data set {label}: load() returned {arr.dtype} {arr.shape}; expected uint8 "
            f"{expected} ({'RGB' if colour else 'grayscale'}, padded and resized; the data set declares "
            f"channels = {samples.channels})"
        )
    return arr
