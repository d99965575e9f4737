"""`benchbox data describe|fetch|verify|export`: data sets and their raw sources."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from benchbox.cli.common import (
    _registry,
    console,
    data_app,
    data_dir_option,
    esc,
    parse_size,
)
from benchbox.contracts import SampleSet
from benchbox.errors import BenchboxError, PluginError, did_you_mean


def _default_samples(registry, name: str, seed: int, data_dir):
    """A data set's samples with its default options (describe, export), through the error boundary."""
    from benchbox.execute.harness import call_plugin

    dataset = registry.get("dataset", name)
    data_root = str(data_dir) if data_dir else None
    return call_plugin(
        registry.origin_of("dataset", name),
        "samples",
        f"data set {name}",
        dataset.samples,
        dict(dataset.defaults),
        seed,
        data_root,
    )


@data_app.command("describe")
def data_describe(
    names: Optional[list[str]] = typer.Argument(
        None, help="Dataset plugins (default: all), or with --suite the suite's data set aliases (default: all)."
    ),
    data_dir: Optional[Path] = data_dir_option("Root of the raw data sources."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the composition draw (with --suite: the suite's)."),
    suite: Optional[Path] = typer.Option(
        None, "--suite", help="Describe this suite's data sets, with the options and seed the suite gives them."
    ),
):
    """Class counts, patients and sources of data sets (their default options, or a suite's)."""
    registry = _registry()
    failed = []
    for name, read in _describable(registry, names, seed, data_dir, suite):
        try:
            samples = read()
            if not isinstance(samples, SampleSet):
                raise PluginError(
                    f"dataset plugin {name} returned {type(samples).__name__} from samples(); it must "
                    "return a benchbox.contracts.SampleSet"
                )
        except BenchboxError as exc:
            failed.append(name)
            console.print(f"[yellow]{esc(name)}: unavailable here[/] — {esc(exc)}", highlight=False)
            continue
        _print_description(name, samples)
    if (names or suite) and failed:
        raise BenchboxError(f"could not describe {', '.join(failed)} (reasons above)")


def _describable(registry, names, seed: int, data_dir, suite_path):
    """(name, a function reading its samples) for each data set to describe: dataset plugins with their
    default options, or a suite's aliases with the suite's options, seed and data root."""
    if suite_path is None:
        for name in names or sorted(registry.datasets):
            yield name, lambda name=name: _default_samples(registry, name, seed, data_dir)
        return
    from benchbox.define.suite import load_suite
    from benchbox.define.tables import read_samples

    s = load_suite(suite_path, registry)
    unknown = [n for n in names or [] if n not in s.datasets]
    if unknown:
        raise BenchboxError(
            f"{suite_path} has no data set {unknown[0]!r}{did_you_mean(unknown[0], s.datasets)}; its data sets: "
            f"{', '.join(s.datasets)}"
        )
    root = str(data_dir) if data_dir else s.data_dir
    for alias in names or list(s.datasets):
        yield alias, lambda alias=alias: read_samples(s.datasets[alias], registry, alias, s.seed, root, s.path)


def _print_description(name: str, samples: SampleSet) -> None:
    t = samples.table
    table = Table(
        title=esc(
            f"{name}: {len(t)} images, {t['group'].nunique()} patients (positive class: {samples.positive_class})"
        )
    )
    for col in ("class", "images", "patients", "sources"):
        table.add_column(col, justify="left" if col in ("class", "sources") else "right")
    for cls in samples.classes:
        sub = t[t["label"] == cls]
        table.add_row(
            esc(cls),
            str(len(sub)),
            str(sub["group"].nunique()),
            esc(", ".join(f"{k} {v}" for k, v in sub["source"].value_counts().items())),
        )
    console.print(table)
    for warning in samples.warnings:
        console.print(f"  [yellow]warning:[/] {esc(warning)}", highlight=False)
    for note in samples.notes:
        console.print(f"  {note}", markup=False, highlight=False)


def _sources(registry, names):
    available = registry.data_sources
    if not available:
        raise PluginError("no data source plugin is installed (the xray plugin provides cohen and kermany)")
    chosen = names or sorted(available)
    unknown = [n for n in chosen if n not in available]
    if unknown:
        raise BenchboxError(f"unknown data source(s) {', '.join(unknown)}; available: {', '.join(sorted(available))}")
    return [(n, available[n].obj) for n in chosen]


@data_app.command("fetch")
def data_fetch(
    sources: Optional[list[str]] = typer.Argument(None, help="Data sources, e.g. cohen kermany (default: all)."),
    data_dir: Optional[Path] = data_dir_option("Root to download into."),
):
    """Download, verify and unpack raw data sources into the data root."""
    from benchbox.data.datadir import data_root

    root = data_root(data_dir)
    for name, source in _sources(_registry(), sources):
        with Progress(
            TextColumn(f"{name}"), BarColumn(), TextColumn("{task.completed:,.0f} bytes"), console=console
        ) as progress:
            task = progress.add_task(name, total=None)
            target = source.fetch(
                root, lambda done, total, task=task: progress.update(task, completed=done, total=total or None)
            )
        console.print(f"[green]{esc(name)}[/] -> {esc(target)}", highlight=False)


@data_app.command("verify")
def data_verify(
    sources: Optional[list[str]] = typer.Argument(None, help="Data sources (default: all)."),
    data_dir: Optional[Path] = data_dir_option("Root that holds the sources."),
):
    """Check a data root against the sources' shipped manifests: missing, changed and extra files."""
    from benchbox.data.datadir import data_root

    root = data_root(data_dir)
    bad = []
    for name, source in _sources(_registry(), sources):
        report = source.verify(root)
        state = "[green]ok[/]" if report.ok else "[red]problems[/]"
        console.print(
            f"{esc(name)}: {state} — {report.checked} file(s) checked under {esc(report.root)}", highlight=False
        )
        for label, items in (("missing", report.missing), ("changed", report.changed), ("extra", report.extra)):
            for item in items[:20]:
                console.print(f"  {label}: {item}", markup=False, highlight=False)
            if len(items) > 20:
                console.print(f"  ... and {len(items) - 20} more {label}", highlight=False)
        for note in report.notes:
            console.print(f"  note: {note}", markup=False, highlight=False)
        if not report.ok:
            bad.append(name)
    if bad:
        raise BenchboxError(
            f"{', '.join(bad)}: files missing or changed under {root} (listed above); fetch again "
            "with `benchbox data fetch` or fix the files by hand"
        )


@data_app.command("export")
def data_export(
    name: str = typer.Argument(..., help="Data set plugin, e.g. synthetic."),
    to: Path = typer.Option(..., "--to", help="Folder to create (class folders + labels.csv)."),
    input_size: str = typer.Option("256x256", "--size", help="HEIGHTxWIDTH of the written images."),
    data_dir: Optional[Path] = data_dir_option("Root of the raw data sources."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the data set's draw."),
    option: Optional[list[str]] = typer.Option(
        None,
        "--option",
        help="KEY=VALUE: a data set option as in a suite (VALUE read as TOML), e.g. lesion_contrast=3; repeatable.",
    ),
):
    """Write a data set as a class-folder tree and a CSV (e.g. the synthetic set, for a walk-through)."""
    from benchbox.data.export import export_dataset, parse_options
    from benchbox.execute.harness import call_plugin

    registry = _registry()
    dataset = registry.get("dataset", name)
    options = parse_options(registry, name, option or [])
    samples = call_plugin(
        registry.origin_of("dataset", name),
        "samples",
        f"data set {name}",
        dataset.samples,
        options,
        seed,
        str(data_dir) if data_dir else None,
    )
    result = export_dataset(samples, to, parse_size(input_size))
    console.print(
        f"wrote {result.get('images', len(samples.table))} images of {esc(name)} to {esc(to)} "
        f"(class folders and labels.csv)",
        highlight=False,
    )
    if result.get("group_pattern"):
        console.print(
            f"patients are in the file names: group_pattern = '{result['group_pattern']}'",
            markup=False,
            highlight=False,
        )
