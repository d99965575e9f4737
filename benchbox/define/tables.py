"""The data sets' sample tables, read and checked before anything trains: what `benchbox validate`
reports with the suite's own problems, and what `benchbox run` reads first (benchbox/define/plan.py).
Files are listed and CSVs read; no pixels are decoded here."""

from __future__ import annotations

import numpy as np

from benchbox.contracts import SampleSet
from benchbox.errors import BenchboxError, DataError, did_you_mean
from benchbox.execute.harness import call_plugin, channels_problem
from benchbox.execute.records import DataKey
from benchbox.execute.schemes import knn_fold_problem


def needed(cells, external: dict) -> tuple[list[DataKey], list[str]]:
    trained = list(dict.fromkeys(c.data for c in cells))
    plain = {k.dataset for k in trained if not k.probe}
    return trained, sorted({a for aliases in external.values() for a in aliases} - plain)


def read_samples(
    entry, registry, alias: str, seed: int, data_dir, suite_path, external_only: bool = False
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
    datasets: dict, registry, seed: int, data_dir, suite_path, trained, external
) -> tuple[dict[str, SampleSet], list[str]]:
    """The sample tables of the data sets trained on and of the test-only ones, listing files and
    reading CSVs but decoding no pixels, and every problem found (one message per data set).

    Shared by `benchbox run` (prepare_data) and `benchbox validate` (benchbox/define/suite.py), so both
    report a data set's problem in the same words."""
    tables: dict[str, SampleSet] = {}
    problems = []
    for alias in dict.fromkeys([*trained, *external]):
        try:
            samples = read_samples(datasets[alias], registry, alias, seed, data_dir, suite_path, alias not in trained)
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


def class_counts(samples: SampleSet) -> dict:
    """Images and patients in all, and of each class in the data set's class order: (images, patients)."""
    t = samples.table
    per_class = {
        c: (int((t["label"] == c).sum()), int(t.loc[t["label"] == c, "group"].nunique())) for c in samples.classes
    }
    return {"images": len(t), "patients": int(t["group"].nunique()), "classes": per_class}


def tiny_classes(samples: SampleSet, alias: str, below: int) -> list[str]:
    """Each class with fewer than ``below`` images, named with its files and the closest other class:
    a rare class is most often a misspelt label ("tumour" among "tumor") that ``label_map`` merges."""
    out = []
    counts = samples.table["label"].value_counts()
    for label, n in counts.items():
        if n >= below:
            continue
        ids = samples.table.loc[samples.table["label"] == label, "id"].astype(str).tolist()
        others = [str(c) for c in counts.index if c != label]
        shown = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
        out.append(
            f"class {label!r} has {n} image(s) ({shown}) against {int(counts.max())} for the largest"
            f"{did_you_mean(label, others)}; a misspelt label is merged with datasets.{alias}.label_map "
            f'(label_map = {{ "{label}" = "<the class it means>" }}), else lower protocol.k'
        )
    return out


def folds_of(protocol, samples: SampleSet, seed: int, alias: str) -> np.ndarray:
    table = samples.table
    try:
        return protocol.assign(samples.labels, table["group"].to_numpy(), table["source"].to_numpy(), seed)
    except BenchboxError as exc:
        named = tiny_classes(samples, alias, below=protocol.n_folds or 2)
        raise BenchboxError(f"data set {alias}: {exc}" + "".join(f"; {t}" for t in named)) from None


def data_problems(
    datasets: dict,
    registry,
    seed: int,
    data_dir,
    suite_path,
    cells,
    external: dict,
    protocol,
    backbones: dict | None = None,
    counts: dict | None = None,
) -> list[str]:
    """What `benchbox run` would find wrong with the suite's data before training, found the way
    prepare_data finds it (sample tables, classes, folds, the cross-dataset positive class) but
    without keeping anything: `benchbox validate` adds these to the suite's other problems.
    Pixels are not decoded, so a file that lists but does not decode is found by `run` only.
    ``datasets``: the entries that passed the option checks (others are not read). ``counts``, when
    given, receives each read data set's class counts (:func:`class_counts`), for `validate` to print."""
    trained_keys, external_only = needed(cells, external)
    trained = [a for a in dict.fromkeys(k.dataset for k in trained_keys) if a not in external_only]
    trained = [a for a in trained if a in datasets]
    external_only = [a for a in external_only if a in datasets]
    tables, problems = read_tables(datasets, registry, seed, data_dir, suite_path, trained, external_only)
    folds = {}
    if protocol is not None:
        for alias in trained:
            if alias in tables:
                try:
                    folds[alias] = folds_of(protocol, tables[alias], seed, alias)
                except BenchboxError as exc:
                    problems.append(str(exc))
    problems += cross_dataset_problems(suite_path, protocol, cells, external, tables)
    problems += same_data_problems(suite_path, cells, external, tables)
    problems += scheme_fold_problems(suite_path, cells, backbones or {}, folds)
    if counts is not None:
        counts.update({alias: class_counts(samples) for alias, samples in tables.items()})
    return problems + channel_problems(suite_path, cells, backbones or {}, registry, tables)


def scheme_fold_problems(suite_path, cells, backbones: dict, folds: dict[str, np.ndarray]) -> list[str]:
    """A knn entry whose ``k`` exceeds the smallest training fold of a data set it trains on, once per pair."""
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


def same_data_problems(suite_path, cells, external: dict, tables: dict[str, SampleSet]) -> list[str]:
    """A data set tested on itself under another alias (the same images: equal fingerprints) in a
    cross-dataset or external protocol: train = test, a figure that looks external and is not."""
    problems: list[str] = []
    for cell in cells:
        a = tables.get(cell.dataset)
        for b_alias in external.get(cell, []):
            b = tables.get(b_alias)
            if a is None or b is None or not a.fingerprint or a.fingerprint != b.fingerprint or cell.probe:
                continue
            message = (
                f"{suite_path}: datasets.{cell.dataset} and datasets.{b_alias} are the same images (fingerprint "
                f"{a.fingerprint[:12]}): testing the models of one on the other is not an external test; point "
                f"one of them at other data, or remove {b_alias!r} from the experiment"
            )
            if message not in problems:
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
