"""The `benchbox` command line (typer). Errors a user can act on are printed as one message,
without a traceback, and the exit code is non-zero."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import click
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from benchbox.errors import BenchboxError

app = typer.Typer(help="Honest, reproducible comparisons of CNN backbones on small medical imaging data sets.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
backbones_app = typer.Typer(help="Inspect backbone plugins.", no_args_is_help=True)
app.add_typer(backbones_app, name="backbones")
plugin_app = typer.Typer(help="Create plugins.", no_args_is_help=True)
app.add_typer(plugin_app, name="plugin")
data_app = typer.Typer(help="Data sets: describe them, fetch their sources.", no_args_is_help=True)
app.add_typer(data_app, name="data")
weights_app = typer.Typer(help="ImageNet weights in the frameworks' caches.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")
console = Console(width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)


def _registry():
    from benchbox.plugins import load_registry

    return load_registry()


class RichReporter:
    """Progress bars for folds and epochs."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.folds = None
        self.epochs = None

    def message(self, text):
        self.progress.console.print(f"[cyan]{text}[/]")

    def cells_start(self, total, done):
        self.folds = self.progress.add_task("folds", total=total, completed=done)

    def fold_start(self, dataset, backbone, fold, epochs):
        if self.epochs is not None:
            self.progress.remove_task(self.epochs)
        self.epochs = self.progress.add_task(f"{dataset} x {backbone} fold {fold}: epochs", total=epochs)

    def epoch(self, done, total):
        self.progress.update(self.epochs, completed=done)

    def fold_end(self, record):
        self.progress.advance(self.folds)
        self.progress.console.print(
            f"  {record['dataset']} x {record['backbone']} fold {record['fold']}: "
            f"trained in {record['train_seconds']:.1f} s, {record['n_test']} test images")


@app.command()
def run(suite: Path = typer.Argument(..., help="Suite file (TOML)."),
        data_dir: Optional[Path] = typer.Option(None, "--data-dir", envvar="BENCHBOX_DATA",
                                                help="Root of the raw data sources (default: user cache)."),
        run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Write (or resume) this run directory."),
        new: bool = typer.Option(False, "--new", help="Start a new run even if an unfinished one exists."),
        executor: Optional[str] = typer.Option(None, "--executor", help="local (default) or ray."),
        ray_address: Optional[str] = typer.Option(None, "--ray-address", envvar="RAY_ADDRESS",
                                                  help="Ray cluster to use (default: start a local instance)."),
        cpus_per_fold: Optional[float] = typer.Option(None, "--cpus-per-fold", help="Ray: CPUs requested per fold."),
        gpus_per_fold: Optional[float] = typer.Option(None, "--gpus-per-fold", help="Ray: GPUs requested per fold."),
        memory_per_fold_gb: Optional[float] = typer.Option(None, "--memory-per-fold-gb", help="Ray: memory per fold."),
        max_retries: Optional[int] = typer.Option(None, "--max-retries", help="Ray: retries of a failing fold."),
        ray_local_cpus: Optional[int] = typer.Option(None, "--ray-local-cpus", help="CPUs of a local Ray instance.")):
    """Run a suite: train and evaluate every dataset x backbone x fold, then print the comparison.

    Rerunning the same command resumes an unfinished run of the same suite."""
    from benchbox.report import print_terminal
    from benchbox.runner import run_suite
    from benchbox.store import RunStore
    from benchbox.suite import load_suite
    from benchbox.summary import summarize

    from benchbox.executors import ExecutorConfig

    registry = _registry()
    s = load_suite(suite, registry, check_availability=True)
    settings = dict(s.executor)
    for key, value in (("kind", executor), ("address", ray_address), ("cpus_per_fold", cpus_per_fold),
                       ("gpus_per_fold", gpus_per_fold), ("memory_gb_per_fold", memory_per_fold_gb),
                       ("max_retries", max_retries), ("local_cpus", ray_local_cpus)):
        if value is not None:
            settings[key] = value
    executor_config = ExecutorConfig(**settings)
    if executor_config.kind not in ("local", "ray"):
        raise BenchboxError(f"--executor {executor_config.kind!r}: choose local or ray")
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        out = run_suite(s, registry, run_dir=run_dir, data_dir=str(data_dir) if data_dir else None,
                        new=new, reporter=RichReporter(progress), executor_config=executor_config)
    from benchbox.breakdown import sections

    store = RunStore(out)
    summary, problems = summarize(store, registry)
    print_terminal(summary, console, title=f"{s.name}: {s.protocol.label}, {s.training.epochs} epochs", problems=problems,
                   extra=sections(store.read_records()[0], store.manifest(), summary))
    console.print(f"run directory: [bold]{out}[/] (report.md, summary.csv, confusion.csv, folds/)")
    failures = store.read_failures()
    if failures:
        raise BenchboxError(f"{len(failures)} fold(s) failed after their retries (errors in {out / 'failed'}): " +
                            "; ".join(f"{f['dataset']} x {f['backbone']} fold {f['fold']}: {f['error'].splitlines()[-1]}"
                                      for f in failures) + ". Rerun the same command to retry them.")


@app.command()
def validate(suite: Path = typer.Argument(..., help="Suite file (TOML).")):
    """Check a suite file and list every problem at once."""
    from benchbox.suite import load_suite

    s = load_suite(suite, _registry())
    console.print(f"[green]{suite}: valid[/] — {len(s.cells)} cell(s) x {s.protocol.n_folds} fold(s) "
                  f"({s.protocol.label}), {s.training.epochs} epochs")
    for d, b in s.cells:
        base, _, probe = d.partition("@")
        console.print(f"  {d} ({s.datasets[base].plugin}{' with probe ' + probe if probe else ''}) x {b} "
                      f"({s.backbones[b].plugin})" + (f", external: {', '.join(s.external[(d, b)])}" if (d, b) in s.external else ""))


@app.command()
def plugins():
    """List every dataset, backbone and evaluator plugin with its origin and availability."""
    registry = _registry()
    table = Table(title="benchbox plugins")
    for col in ("kind", "name", "origin", "available", "description"):
        table.add_column(col)
    for kind in ("dataset", "backbone", "evaluator"):
        for name, entry in sorted(registry.table(kind).items()):
            avail = entry.availability
            table.add_row(kind, name, entry.origin, "yes" if avail.ok else f"[red]no[/]: {avail.reason}",
                          getattr(entry.obj, "description", ""))
    console.print(table)
    for plugin, error in registry.broken:
        console.print(f"[red]broken plugin {plugin}:[/] {error}")


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A run directory written by `benchbox run`."),
           format: str = typer.Option("terminal", "--format", "-f", help="terminal, markdown, csv or latex."),
           output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout.")):
    """Re-render a run's tables from its stored fold records alone."""
    from benchbox.report import FORMATS, print_terminal, render_text
    from benchbox.store import RunStore
    from benchbox.summary import summarize

    if format not in FORMATS:
        raise BenchboxError(f"--format {format!r}: choose one of {', '.join(FORMATS)}")
    store = RunStore(run_dir)
    manifest = store.manifest()
    summary, problems = summarize(store, _registry())
    title = f"{manifest['suite']}: {manifest.get('protocol_label', '')}"
    from benchbox.breakdown import sections

    extra = sections(store.read_records()[0], manifest, summary)
    plots = _write_plots(store, summary, manifest["suite"])
    if format == "terminal" and output is None:
        print_terminal(summary, console, title=title, problems=problems, extra=extra)
        if plots:
            console.print(f"plots: {len(plots)} PNG files in {store.path / 'plots'}")
        return
    text = render_text(summary, "markdown" if format == "terminal" else format, title, problems, extra)
    if output:
        output.write_text(text)
        console.print(f"wrote {output}")
    else:
        sys.stdout.write(text)


def _write_plots(store, summary, suite_name):
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        err_console.print("plots skipped: matplotlib is not installed (pip install 'benchbox[plots]')")
        return []
    from benchbox.plots import write_plots

    records, _ = store.read_records()
    return write_plots(store.path, records, summary, suite_name)


@app.command()
def compare(run_dir: Path = typer.Argument(..., help="A run directory."),
            a: str = typer.Argument(..., help="First backbone (its name in the suite)."),
            b: str = typer.Argument(..., help="Second backbone."),
            dataset: Optional[str] = typer.Option(None, "--dataset", help="Data set, when they share several."),
            n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples (patients).")):
    """Paired comparison of two backbones on the same samples: McNemar and the AUC difference."""
    from benchbox.compare import compare as run_compare

    r = run_compare(run_dir, a, b, dataset, n_boot)
    m = r["mcnemar"]
    table = Table(title=f"{a} vs {b} on {r['dataset']} ({r['n']} shared test images)", show_header=False)
    table.add_column("")
    table.add_column("")
    table.add_row("3-class accuracy", f"{100 * r['accuracy_a']:.2f}% vs {100 * r['accuracy_b']:.2f}%")
    table.add_row("right only by " + a, str(m["only_a"]))
    table.add_row("right only by " + b, str(m["only_b"]))
    table.add_row(f"McNemar ({m['method']})", f"p = {m['p_value']:.4g}" + (" (significant at 0.05)" if m["p_value"] < 0.05 else ""))
    lo, hi = r["auc_difference_ci"]
    table.add_row("AUC", f"{r['auc_a']:.4f} vs {r['auc_b']:.4f}")
    table.add_row("AUC difference (a − b)", f"{r['auc_difference']:+.4f} [95% CI {lo:+.4f}, {hi:+.4f}], patient bootstrap")
    console.print(table)


@app.command()
def leaderboard(runs: List[Path] = typer.Argument(..., help="Run directories (e.g. runs/*)."),
                metric: str = typer.Option("accuracy_3class", "--metric", help="accuracy_3class, accuracy_2class, "
                                           "sensitivity, specificity, auc, macro_f1 or balanced_accuracy."),
                dataset: Optional[str] = typer.Option(None, "--dataset", help="Only this data set (name or plugin)."),
                format: str = typer.Option("markdown", "--format", "-f", help="markdown, html, csv or json."),
                output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file.")):
    """Rank dataset x backbone entries across runs, grouping entries that are not comparable."""
    from benchbox.leaderboard import collect, rank, render

    entries, problems = collect(runs, _registry(), dataset)
    text = render(rank(entries, metric), metric, format)
    for p in problems:
        err_console.print(f"warning: {p}", markup=False)
    if output:
        output.write_text(text)
        console.print(f"wrote {output}")
    else:
        sys.stdout.write(text)


@app.command()
def bench(backbones: List[str] = typer.Argument(..., help="Backbone plugins, e.g. keras/mobilenet_v2 torch/mobilenet_v2."),
          batch_sizes: str = typer.Option("1,64", "--batch-sizes", help="Inference batch sizes, comma-separated."),
          train_batch_size: int = typer.Option(64, "--train-batch-size", help="Training batch size (0: skip training)."),
          input_size: str = typer.Option("200x266", "--input", help="HEIGHTxWIDTH."),
          device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
          amp: bool = typer.Option(False, "--amp", help="Mixed precision (AMP / Keras mixed policy)."),
          channels_last: bool = typer.Option(False, "--channels-last", help="PyTorch channels-last memory format."),
          min_seconds: float = typer.Option(2.0, "--min-seconds", help="Measure each figure for at least this long."),
          output: Path = typer.Option(Path("bench.csv"), "--output", "-o", help="CSV file to write.")):
    """Inference and training throughput, timm-style: warm-up excluded, synchronised clocks."""
    import pandas as pd

    from benchbox.bench import CSV_COLUMNS, bench_backbone

    if device not in ("cpu", "cuda"):
        raise BenchboxError(f"--device {device!r}: choose cpu or cuda")
    try:
        sizes = [int(v) for v in batch_sizes.split(",") if v.strip()]
    except ValueError:
        raise BenchboxError(f"--batch-sizes {batch_sizes!r}: write integers separated by commas, e.g. 1,64") from None
    registry = _registry()
    rows = []
    for name in backbones:
        backbone = registry.get("backbone", name)
        if not hasattr(backbone, "bench_steps"):
            raise BenchboxError(f"{name}: this plugin does not implement bench_steps(); it cannot be benchmarked")
        options = {**backbone.defaults, "input_size": list(parse_size(input_size))}
        console.print(f"benchmarking {name} on {device} ...")
        rows += bench_backbone(backbone, options, sizes, train_batch_size, device, amp, channels_last,
                               min_seconds=min_seconds)
    frame = pd.DataFrame(rows)[CSV_COLUMNS]
    frame.to_csv(output, index=False)
    console.print(_rich_frame(frame[["model", "infer_batch_size", "infer_samples_per_sec", "infer_step_time",
                                     "infer_step_time_p95", "train_samples_per_sec", "gmacs", "param_count"]],
                              f"throughput on {device}"))
    console.print(f"wrote {output}")


def _rich_frame(frame, title):
    table = Table(title=title)
    for col in frame.columns:
        table.add_column(str(col))
    for _, row in frame.iterrows():
        table.add_row(*[str(v) for v in row])
    return table


@backbones_app.command("describe")
def backbones_describe(name: str = typer.Argument(..., help="Backbone plugin, e.g. keras/inception_v3."),
                       cutoff: Optional[int] = typer.Option(None, "--cutoff", help="Frozen layers (default: the study's)."),
                       input_size: str = typer.Option("200x266", "--input", help="HEIGHTxWIDTH.")):
    """Parameters (total / frozen / trainable), depth, last frozen layer, preprocessing, MACs."""
    registry = _registry()
    backbone = registry.get("backbone", name)
    options = dict(backbone.defaults)
    if cutoff is not None:
        options["cutoff"] = cutoff
    size = parse_size(input_size)
    problems = backbone.check_options({**options, "weights": "none"})
    if problems:
        raise BenchboxError(f"{name}: " + "; ".join(problems))
    facts = backbone.describe(options, size)
    table = Table(title=name, show_header=False)
    table.add_column("fact")
    table.add_column("value")
    for key, value in facts.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    console.print(table)


@weights_app.command("fetch")
def weights_fetch(names: Optional[List[str]] = typer.Argument(None, help="Backbones (default: every available one)."),
                  alpha: float = typer.Option(1.0, "--alpha", help="MobileNet v2 width multiplier (Keras)."),
                  input_size: str = typer.Option("224x224", "--input", help="HEIGHTxWIDTH (Keras MobileNet v2 picks its file by it).")):
    """Download ImageNet weights into the framework caches, for later offline runs."""
    from benchbox.errors import PluginError

    registry = _registry()
    names = names or sorted(n for n, e in registry.backbones.items() if e.availability.ok)
    failed = []
    for name in names:
        backbone = registry.get("backbone", name)
        options = {**backbone.defaults, "weights": "imagenet", "input_size": list(parse_size(input_size))}
        if "alpha" in options and backbone.framework == "keras":
            options["alpha"] = alpha
        try:
            backbone.prepare(options)
            console.print(f"[green]ok[/] {name}")
        except BenchboxError as exc:
            failed.append(name)
            err_console.print(f"[red]failed[/] {name}: {exc}", markup=False)
    if failed:
        raise PluginError(f"could not fetch weights for {len(failed)} backbone(s): {', '.join(failed)}")


@data_app.command("describe")
def data_describe(names: Optional[List[str]] = typer.Argument(None, help="Dataset plugins (default: all)."),
                  data_dir: Optional[Path] = typer.Option(None, "--data-dir", envvar="BENCHBOX_DATA",
                                                          help="Root of the raw data sources."),
                  seed: int = typer.Option(0, "--seed", help="Seed of the composition draw.")):
    """Class counts, patients and sources of data sets (their default options)."""
    registry = _registry()
    for name in names or sorted(registry.datasets):
        dataset = registry.get("dataset", name)
        try:
            samples = dataset.samples(dict(dataset.defaults), seed, str(data_dir) if data_dir else None)
        except BenchboxError as exc:
            if names:
                raise
            console.print(f"[yellow]{name}: unavailable here[/] — {exc}", markup=True, highlight=False)
            continue
        t = samples.table
        table = Table(title=f"{name}: {len(t)} images, {t['group'].nunique()} patients "
                            f"(positive class: {samples.positive_class})")
        for col in ("class", "images", "patients", "sources"):
            table.add_column(col, justify="left" if col in ("class", "sources") else "right")
        for cls in samples.classes:
            sub = t[t["label"] == cls]
            table.add_row(cls, str(len(sub)), str(sub["group"].nunique()),
                          ", ".join(f"{k} {v}" for k, v in sub["source"].value_counts().items()))
        console.print(table)
        for note in samples.notes:
            console.print(f"  {'[yellow]warning:[/] ' if 'shortfall' in note or 'skipped' in note else ''}{note}")


@data_app.command("fetch")
def data_fetch(sources: Optional[List[str]] = typer.Argument(None, help="cohen and/or kermany (default: both)."),
               data_dir: Optional[Path] = typer.Option(None, "--data-dir", envvar="BENCHBOX_DATA",
                                                       help="Root to download into.")):
    """Download the raw sources (GitHub for Cohen, Mendeley Data for Kermany) into the data root."""
    from benchbox.datadir import data_root
    from benchbox_xray.fetch import SOURCES, fetch

    root = data_root(data_dir)
    for name in sources or list(SOURCES):
        with Progress(TextColumn(f"{name}"), BarColumn(), TextColumn("{task.completed:,.0f} bytes"),
                      console=console) as progress:
            task = progress.add_task(name, total=None)
            target = fetch(name, root, lambda done, total: progress.update(task, completed=done, total=total or None))
        console.print(f"[green]{name}[/] -> {target}")


@plugin_app.command("new")
def plugin_new(name: str = typer.Argument(..., help="Short name, e.g. resnet (makes benchbox-resnet/)."),
               directory: Path = typer.Option(Path("."), "--dir", help="Where to create the package.")):
    """Scaffold a backbone plugin package: entry point, a Keras ResNet50 backbone, conformance test."""
    from benchbox.scaffold import scaffold

    root = scaffold(name, directory)
    console.print(f"created {root}\n  next: pip install -e {root} && benchbox plugins && python -m pytest {root}/tests")


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
        return h, w
    except ValueError:
        raise BenchboxError(f"input size {text!r}: write HEIGHTxWIDTH, e.g. 200x266") from None


def main():
    try:
        rv = app(standalone_mode=False)
    except BenchboxError as exc:
        err_console.print("[bold red]error:[/] ", end="")
        err_console.print(str(exc), markup=False, highlight=False)
        sys.exit(1)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted; rerun the same command to resume")
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
