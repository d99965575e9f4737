"""Planning a run: which data sets each cell needs, their sample tables and folds, and the units
of work (cell x fold) still to train. Sample tables are read here; pixels are not (``load_images``
is the one place that decodes, and only for units that will run).
"""

from __future__ import annotations

import traceback
import zlib
from dataclasses import dataclass, replace

import numpy as np

from benchbox.contracts import SampleSet
from benchbox.data.images import to_channels
from benchbox.data.probes import IMAGE_PROBES, transform
from benchbox.data.splitters import fold_count, train_test_indices
from benchbox.define.suite import DatasetEntry, Suite
from benchbox.errors import BenchboxError, DataError
from benchbox.execute.harness import call_plugin, channels_problem
from benchbox.execute.records import CellKey, DataKey
from benchbox.results.explain import explain_layer


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
    return _needed(suite.cells, suite.external)


def _needed(cells, external: dict) -> tuple[list[DataKey], list[str]]:
    trained = list(dict.fromkeys(c.data for c in cells))
    plain = {k.dataset for k in trained if not k.probe}
    return trained, sorted({a for aliases in external.values() for a in aliases} - plain)


def _samples(
    entry: DatasetEntry, registry, alias: str, seed: int, data_dir, suite_path, external_only: bool = False
) -> SampleSet:
    plugin = registry.get("dataset", entry.plugin)
    options = dict(entry.options)
    samples = call_plugin(entry.plugin, "samples", f"data set {alias}", plugin.samples, options, seed, data_dir)
    if not isinstance(samples, SampleSet):
        raise BenchboxError(
            f"dataset plugin {entry.plugin} returned {type(samples).__name__} for {alias}; "
            "samples() must return a benchbox.contracts.SampleSet"
        )
    if len(samples.table) == 0:
        raise DataError(
            f"data set {alias} ({entry.plugin}) has no images with these options; check its options "
            "and the data root (`benchbox data describe`)"
        )
    if options.get("positive_class") and not external_only:  # a test-only set may lack it (matched by name)
        if options["positive_class"] not in samples.classes:
            raise BenchboxError(
                f"{suite_path}: datasets.{alias}.positive_class: {options['positive_class']!r} is "
                f"not a class of this data set; classes: {', '.join(samples.classes)}"
            )
        samples.positive_class = options["positive_class"]
    return samples


def read_tables(
    datasets: dict[str, DatasetEntry], registry, seed: int, data_dir, suite_path, trained, external
) -> tuple[dict[str, SampleSet], list[str]]:
    """The sample tables of the data sets trained on and of the test-only ones, listing files and
    reading CSVs but decoding no pixels, and every problem found (one message per data set).

    Shared by `benchbox run` (prepare_data) and `benchbox validate` (benchbox/define/suite.py), so both
    report a data set's problem in the same words."""
    tables: dict[str, SampleSet] = {}
    problems = []
    for alias in dict.fromkeys([*trained, *external]):
        try:
            samples = _samples(datasets[alias], registry, alias, seed, data_dir, suite_path, alias not in trained)
        except BenchboxError as exc:
            problems.append(str(exc))
            continue
        if alias in trained and (len(samples.classes) < 2 or samples.table["label"].nunique() < 2):
            problems.append(
                f"data set {alias}: needs images of at least two classes to train on; found "
                f"{', '.join(sorted(samples.table['label'].astype(str).unique()))}"
            )
            continue
        tables[alias] = samples
    return tables, problems


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
                folds = _folds(suite.protocol, samples, suite.seed, alias)
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


def _folds(protocol, samples: SampleSet, seed: int, alias: str) -> np.ndarray:
    table = samples.table
    try:
        return protocol.assign(samples.labels, table["group"].to_numpy(), table["source"].to_numpy(), seed)
    except BenchboxError as exc:
        raise BenchboxError(f"data set {alias}: {exc}") from None


def data_problems(
    datasets: dict[str, DatasetEntry],
    registry,
    seed: int,
    data_dir,
    suite_path,
    cells,
    external: dict,
    protocol,
    backbones: dict | None = None,
) -> list[str]:
    """What `benchbox run` would find wrong with the suite's data before training, found the way
    prepare_data finds it (sample tables, classes, folds, the cross-dataset positive class) but
    without keeping anything: `benchbox validate` adds these to the suite's other problems.
    Pixels are not decoded, so a file that lists but does not decode is found by `run` only.
    ``datasets``: the entries that passed the option checks (others are not read)."""
    trained_keys, external_only = _needed(cells, external)
    trained = [a for a in dict.fromkeys(k.dataset for k in trained_keys) if a not in external_only]
    trained = [a for a in trained if a in datasets]
    external_only = [a for a in external_only if a in datasets]
    tables, problems = read_tables(datasets, registry, seed, data_dir, suite_path, trained, external_only)
    folds = {}
    if protocol is not None:
        for alias in trained:
            if alias in tables:
                try:
                    folds[alias] = _folds(protocol, tables[alias], seed, alias)
                except BenchboxError as exc:
                    problems.append(str(exc))
    problems += cross_dataset_problems(suite_path, protocol, cells, external, tables)
    problems += scheme_fold_problems(suite_path, cells, backbones or {}, folds)
    return problems + channel_problems(suite_path, cells, backbones or {}, registry, tables)


def scheme_fold_problems(suite_path, cells, backbones: dict, folds: dict[str, np.ndarray]) -> list[str]:
    """A knn entry whose ``k`` exceeds the smallest training fold of a data set it trains on, once per pair."""
    from benchbox.execute.schemes import knn_fold_problem

    problems: list[str] = []
    for cell in cells:
        entry = backbones.get(cell.backbone)
        if entry is None or cell.dataset not in folds or cell.probe:
            continue
        problem = knn_fold_problem(entry.options, folds[cell.dataset], cell.dataset)
        message = f"{suite_path}: backbones.{cell.backbone}.{problem}" if problem else None
        if message and message not in problems:
            problems.append(message)
    return problems


def channel_problems(suite_path, cells, backbones: dict, registry, tables: dict[str, SampleSet]) -> list[str]:
    """A backbone that declares it takes grayscale (or RGB) only, trained on a data set of the other kind
    (``Backbone.accepted_channels``): refused before any image is decoded, once per pair. Only the
    trained-on data set counts: probes keep its channels, external test sets are converted to them."""
    problems: list[str] = []
    for cell in cells:
        samples, entry = tables.get(cell.dataset), backbones.get(cell.backbone)
        if samples is None or entry is None:
            continue
        try:
            backbone = registry.get("backbone", entry.plugin)
        except BenchboxError:  # an unknown plugin is reported by the suite's own checks
            continue
        data = f"data set {cell.dataset!r} (datasets.{cell.dataset})"
        problem = channels_problem(backbone, entry.plugin, samples.channels, data)
        message = f"{suite_path}: backbones.{cell.backbone}: {problem}" if problem else None
        if message and message not in problems:
            problems.append(message)
    return problems


def cross_dataset_problems(suite_path, protocol, cells, external: dict, tables: dict[str, SampleSet]) -> list[str]:
    """Every pair (trained on A, tested on B) of a cross-dataset suite needs A's positive class among
    B's images (classes are matched by name; the other classes may differ). ``tables``: alias ->
    samples of the data sets that could be read; ``protocol``: None when it has problems of its own."""
    if protocol is None or not protocol.crosses_datasets:
        return []
    kind = protocol.kind
    problems = []
    for cell in cells:
        a = tables.get(cell.dataset)
        if cell.probe or a is None:
            continue
        positive = a.positive_class
        for b_alias in external.get(cell, []):
            b = tables.get(b_alias)
            if b is None:
                continue
            present = sorted(b.table["label"].astype(str).unique())
            message = (
                f'{suite_path}: protocol.kind = "{kind}": trained on {cell.dataset!r} (positive class '
                f"{positive!r}), tested on {b_alias!r}, whose images have no class {positive!r} (its classes: "
                f"{', '.join(present)}). Classes are matched by name: map the folder name with "
                f'datasets.{b_alias}.label_map (label_map = {{ "<its folder name>" = "{positive}" }}), or set '
                f"datasets.{cell.dataset}.positive_class to a class both data sets have"
            )
            if positive not in present and message not in problems:
                problems.append(message)
    return problems


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
    return PreparedData(key, samples, _folds(suite.protocol, samples, suite.seed, key.label))


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
                        # [explain]: read by the harness only (it holds the test labels), see benchbox/results/explain.py
                        "explain": {
                            **suite.explain,
                            "layer": explain_layer(suite.explain, cell.backbone),
                            "y_test": labels[test_idx],
                        }  # fmt: skip
                        if suite.explain and fold != refit  # not the refit
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
