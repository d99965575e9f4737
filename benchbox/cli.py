"""The `benchbox` command line (typer).

The error boundary of benchbox: errors a user can act on are printed as one message without a
traceback; usage errors are click's one-line usage messages (exit 2); a plugin's failure names the
plugin, method and fold, its traceback goes to the run's log (shown with --verbose); Ctrl-C says
what was kept and how to resume (exit 130); anything else is reported as a bug with its traceback
in a log file. Exit codes: 0 ok, 1 error, 2 usage, 130 interrupted.
"""

from __future__ import annotations

import difflib
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape as rich_escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from benchbox.contracts import Backbone
from benchbox.environment import busy_note, choose_threads
from benchbox.errors import BenchboxError, PluginError

app = typer.Typer(
    help="Honest, reproducible comparisons of CNN backbones on small medical imaging data sets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
backbones_app = typer.Typer(help="Inspect backbone plugins.", no_args_is_help=True)
app.add_typer(backbones_app, name="backbones")
plugin_app = typer.Typer(help="Create plugins.", no_args_is_help=True)
app.add_typer(plugin_app, name="plugin")
data_app = typer.Typer(help="Data sets: describe, fetch, verify and export them.", no_args_is_help=True)
app.add_typer(data_app, name="data")
weights_app = typer.Typer(help="ImageNet weights in the frameworks' caches.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")
export_app = typer.Typer(help="Send stored runs to an experiment tracker.", no_args_is_help=True)
app.add_typer(export_app, name="export")
# a terminal's own width; piped or to a file: COLUMNS when set (rich reads it), else 200
_COLUMNS_SET = os.environ.get("COLUMNS", "").isdigit()
THREADS_HELP = (
    "Framework threads per process (OMP_NUM_THREADS, TF_NUM_INTRAOP_THREADS, BLAS pools): auto (default) sizes "
    "them to the cores free at the start (affinity, CPU quota, load average), or a number."
)
console = Console(width=None if sys.stdout.isatty() or _COLUMNS_SET else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() or _COLUMNS_SET else 200)
STATE = {"verbose": False, "overrides": {}, "registry": None}


def esc(value) -> str:
    """Text from plugins, suites and data (names, descriptions, messages) shown literally: never
    read as rich markup (a class named '[/]' must not crash a table, nor '[red]' colour it)."""
    return rich_escape(str(value))


def _data_dir_option(value: Optional[Path]) -> Optional[Path]:
    """--data-dir (or BENCHBOX_DATA) names a folder: a file is a usage error that says so."""
    if value is not None and value.exists() and not value.is_dir():
        raise typer.BadParameter(
            f"{value} is a file, not a folder: give the folder that holds the data sources (or that they are "
            "downloaded into)"
        )
    return value


def _threads_option(value: str) -> str:
    """--threads: auto or a whole number from 1 (a usage error otherwise, like any malformed option)."""
    text = str(value).strip().lower()
    if text != "auto" and not (text.isdigit() and int(text) >= 1):
        raise typer.BadParameter(f"{value!r}: give auto (the default: the cores free at the start) or a number from 1")
    return text


class Interrupted(BenchboxError):
    """Ctrl-C: what was kept, and the command that resumes."""


@app.callback()
def _options(
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Show tracebacks of plugin failures and framework log lines."
    ),
):
    STATE["verbose"] = verbose
    # framework C++ logs (TensorFlow, absl) are noise unless asked for
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "3")
    if not verbose:
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def _registry(warn: bool = True):
    from benchbox.plugins import load_registry

    registry = STATE["registry"] or load_registry()
    if warn:
        for plugin, error in registry.broken:
            err_console.print(f"warning: broken plugin {plugin}: {error}", markup=False, highlight=False)
    return registry


class RichReporter:
    """Progress bars for folds and epochs."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.folds = None
        self.epochs = None
        self.run_dir = None

    def session(self, run_dir):
        self.run_dir = run_dir

    def message(self, text):
        self.progress.console.print(text, style="cyan", markup=False, highlight=False)

    def failure_detail(self, where, detail):
        if STATE["verbose"]:
            self.progress.console.print(f"traceback of {where}:\n{detail}", markup=False, highlight=False)

    def cells_start(self, total, done):
        self.folds = self.progress.add_task("folds", total=total, completed=done)

    def fold_start(self, cell, fold, epochs):
        if self.epochs is not None:
            self.progress.remove_task(self.epochs)
        self.epochs = self.progress.add_task(
            esc(f"{cell} {f'fold {fold}' if isinstance(fold, int) else fold}: epochs"), total=epochs
        )

    def epoch(self, done, total):
        self.progress.update(self.epochs, completed=done)

    def fold_end(self, record):
        self.progress.advance(self.folds)
        self.progress.console.print(
            f"  {record.cell} fold {record.fold}: trained in {record.train_seconds:.1f} s, {record.n_test} test images",
            markup=False,
            highlight=False,
        )


def _resume_hint(suite: Path, out_dir: Path | None) -> str:
    if out_dir is None or not Path(out_dir).is_dir():
        return f"nothing was stored yet; rerun `benchbox run {suite}` to start again"
    kept = len(list((Path(out_dir) / "folds").glob("*.json")))  # the session released its lock on the way out
    return (
        f"{kept} finished fold(s) are kept in {out_dir}; rerun `benchbox run {suite}` (or with "
        f"--run-dir {out_dir}) to resume"
    )


@app.command()
def run(
    suite: Path = typer.Argument(..., help="Suite file (TOML)."),
    data_dir: Optional[Path] = typer.Option(
        None,
        "--data-dir",
        envvar="BENCHBOX_DATA",
        callback=_data_dir_option,
        help="Root of the raw data sources (default: user cache).",
    ),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Write (or resume) this run directory."),
    new: bool = typer.Option(False, "--new", help="Start a new run even if an unfinished one exists."),
    executor: Optional[str] = typer.Option(None, "--executor", help="local (default) or ray."),
    ray_address: Optional[str] = typer.Option(
        None, "--ray-address", envvar="RAY_ADDRESS", help="Ray cluster to use (default: start a local instance)."
    ),
    cpus_per_fold: Optional[float] = typer.Option(None, "--cpus-per-fold", help="Ray: CPUs requested per fold."),
    gpus_per_fold: Optional[float] = typer.Option(None, "--gpus-per-fold", help="Ray: GPUs requested per fold."),
    memory_per_fold_gb: Optional[float] = typer.Option(None, "--memory-per-fold-gb", help="Ray: memory per fold."),
    max_retries: Optional[int] = typer.Option(None, "--max-retries", help="Ray: retries of a failing fold."),
    ray_local_cpus: Optional[int] = typer.Option(None, "--ray-local-cpus", help="CPUs of a local Ray instance."),
    threads: str = typer.Option("auto", "--threads", callback=_threads_option, help=THREADS_HELP),
):
    """Run a suite: train and evaluate every dataset x backbone x fold, then print the comparison.

    Rerunning the same command resumes an unfinished run of the same suite."""
    from benchbox.executors import choose_executor
    from benchbox.runner import run_suite
    from benchbox.suite import load_suite, with_tracking_overrides
    from benchbox.views.report import print_terminal

    chosen = choose_threads(threads)
    registry = _registry()
    s = load_suite(suite, registry, check_availability=True)
    s.tracking = with_tracking_overrides(s.tracking, STATE["overrides"].get("tracking", {}), registry)
    settings = dict(s.executor)
    for key, value in (
        ("kind", executor),
        ("address", ray_address),
        ("cpus_per_fold", cpus_per_fold),
        ("gpus_per_fold", gpus_per_fold),
        ("memory_gb_per_fold", memory_per_fold_gb),
        ("max_retries", max_retries),
        ("local_cpus", ray_local_cpus),
    ):
        if value is not None:
            settings[key] = value
    if executor is not None and executor not in registry.executors:
        names = sorted(registry.executors)
        raise BenchboxError(f"--executor {executor!r}: choose {' or '.join(names)}{did_you_mean(executor, names)}")
    chosen_executor = choose_executor(registry, settings)
    note = busy_note(chosen)
    if note:
        console.print(esc(note), style="yellow", highlight=False)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    reporter = None
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            reporter = RichReporter(progress)
            result = run_suite(
                s,
                registry,
                run_dir=run_dir,
                data_dir=str(data_dir) if data_dir else None,
                new=new,
                reporter=reporter,
                executor=chosen_executor,
            )
    except KeyboardInterrupt:
        out = reporter.run_dir if reporter is not None else None
        raise Interrupted(f"interrupted: {_resume_hint(suite, out)}") from None
    print_terminal(result, console)
    console.print(
        f"run directory: [bold]{esc(result.run_dir)}[/] (report.html, report.md, summary.csv, folds/, plots/)",
        highlight=False,
    )
    if result.failures:
        errors = [
            (str(f.get("error") or "unknown error").splitlines() or ["unknown error"])[0] for f in result.failures
        ]
        errors = [e for e in errors if not e.startswith("skipped")] or errors
        raise PluginError(
            f"{len(result.failures)} fold(s) failed or were skipped (errors in {result.run_dir / 'failed'}, "
            f"tracebacks in {result.run_dir / 'benchbox.log'}): "
            + "; ".join(errors[:3])
            + ". Fix the cause and rerun the same command to retry them."
        )


@app.command()
def validate(
    suite: Path = typer.Argument(..., help="Suite file (TOML)."),
    data_dir: Optional[Path] = typer.Option(
        None,
        "--data-dir",
        envvar="BENCHBOX_DATA",
        callback=_data_dir_option,
        help="Root of the raw data sources (default: user cache).",
    ),
    no_data: bool = typer.Option(False, "--no-data", help="Check the file only; do not read the data sets' tables."),
):
    """Check a suite and its data sets' tables, listing every problem at once.

    Files are listed and CSVs read; no pixels are decoded."""
    from benchbox.suite import load_suite

    s = load_suite(suite, _registry(), check_data=not no_data, data_dir=str(data_dir) if data_dir else None)
    console.print(
        f"[green]{esc(suite)}: valid[/] — {len(s.cells)} cell(s) x {s.protocol.n_folds or 'data-decided'} fold(s) "
        f"({s.protocol.label}), {s.training.epochs} epochs",
        highlight=False,
    )
    for cell in s.cells:
        ext = s.external.get(cell)
        console.print(
            f"  {cell.label} ({s.datasets[cell.dataset].plugin}) x {cell.backbone} "
            f"({s.backbones[cell.backbone].plugin})" + (f", external: {', '.join(ext)}" if ext else ""),
            markup=False,
            highlight=False,
        )


@app.command()
def plugins():
    """List every dataset, backbone, evaluator and data source with its origin and availability."""
    registry = _registry(warn=False)
    table = Table(title="benchbox plugins")
    for col in ("kind", "name", "origin", "available", "description"):
        table.add_column(col)
    for kind in registry.tables:
        for name, entry in sorted(registry.table(kind).items()):
            avail = entry.availability
            table.add_row(
                esc(kind),
                esc(name),
                esc(entry.origin),
                "yes" if avail.ok else f"[red]no[/]: {esc(avail.reason)}",
                esc(getattr(entry.obj, "description", "")),
            )
    for prefix, (family, origin, _) in sorted(registry.backbones.families.items()):
        avail = family.availability()
        table.add_row(
            "backbone family",
            esc(f"{prefix}/<model>"),
            esc(origin),
            "yes" if avail.ok else f"[red]no[/]: {esc(avail.reason)}",
            esc(family.description),
        )
    console.print(table)
    for plugin, error in registry.broken:
        console.print(f"[red]broken plugin {esc(plugin)}:[/] {esc(error)}", highlight=False)
    if registry.broken:
        raise PluginError(f"{len(registry.broken)} plugin problem(s) above; fix or uninstall the plugin(s)")


def _output_file(output: Path, option: str = "--output", example: str = "report.md") -> Path:
    """A file path a command may write: not a folder, its folder exists."""
    if output.is_dir():
        raise BenchboxError(f"{option} {output} is a folder; name a file, e.g. {output / example}")
    if not output.parent.exists():
        raise BenchboxError(f"{option} {output}: folder {output.parent} does not exist; create it first")
    return output


def did_you_mean(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _output_format(registry, name: str, what: str):
    """The registered output format ``--format NAME`` names (or one of its aliases, e.g. md), able to
    render ``what`` ("run" or "leaderboard"); an error listing those that can."""
    able = [
        n
        for n, e in registry.output_formats.items()
        if (e.obj.renders_runs if what == "run" else e.obj.renders_leaderboards)
    ]
    canonical = registry.canonical("output format", name)
    if canonical not in able:
        choices = (["terminal"] if what == "run" else []) + able
        raise BenchboxError(f"--format {name!r}: choose one of {', '.join(choices)}{did_you_mean(name, choices)}")
    return registry.get("output format", canonical)


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A run directory written by `benchbox run`."),
    format: str = typer.Option(
        "terminal", "--format", "-f", help="terminal, or an output format: markdown, csv, latex, html, json..."
    ),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
):
    """Re-render a run's tables from its stored fold records alone.

    The run's report files (report.html, report.md, summary.csv, plots/) are rewritten too."""
    from benchbox.runner import rerender
    from benchbox.views.report import print_terminal

    registry = _registry()
    chosen = _output_format(registry, "markdown" if format == "terminal" else format, "run")
    if output is not None:
        _output_file(output)
    result = rerender(run_dir, registry)
    if format == "terminal" and output is None:
        print_terminal(result, console)
        return
    text = chosen.render_run(result)
    if output:
        output.write_text(text, encoding="utf-8")
        console.print(f"wrote {output}", highlight=False)
    else:
        sys.stdout.write(text)


@app.command()
def explain(
    run_dir: Path = typer.Argument(..., help="A run directory written by `benchbox run` with [explain] in its suite."),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Folder for the panels and heat_share.csv (default: RUN_DIR/plots)."
    ),
    images: int = typer.Option(4, "--images", min=1, help="Images per class in each panel (wrong predictions first)."),
):
    """(Re)draw a run's Grad-CAM panels and its heat-share table from the maps the run stored."""
    from benchbox import explain as ex
    from benchbox.records import group_by_cell
    from benchbox.store import RunStore, write_atomic

    if out is not None and out.exists() and not out.is_dir():
        raise BenchboxError(
            f"--out {out} is a file; --out names a folder for the panels and heat_share.csv: choose a new or "
            f"existing folder (e.g. {out.parent / 'gradcam'}), or move the file away"
        )
    store = RunStore(run_dir)
    manifest = store.manifest()
    records, _ = store.read_records(manifest)
    cells = group_by_cell(records)
    damaged: list[str] = []
    explained = ex.stored(run_dir, {c.slug: c for c in cells}, damaged)
    for problem in damaged:
        err_console.print(f"warning: {problem}", markup=False, highlight=False)
    if not explained:
        why = sorted({str(r.info["explain"].get("status")) for r in records if isinstance(r.info.get("explain"), dict)})
        if why:
            raise BenchboxError(f"{run_dir}: its suite has [explain], but no fold stored maps: " + "; ".join(why))
        raise BenchboxError(ex.NO_EXPLANATIONS.format(run=run_dir))
    settings = (manifest.get("suite_as_run") or {}).get("explain") or {}
    centre, frame = float(settings.get("centre", 0.6)), float(settings.get("frame", 0.1))
    target = out if out is not None else Path(run_dir) / "plots"
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchboxError(
            f"--out {target}: cannot create that folder ({exc.strerror or exc}); choose another"
        ) from None
    paths = ex.draw_panels(explained, target, images)
    table = ex.share_frame(explained, cells, centre, frame)
    csv_path = target / "heat_share.csv"
    write_atomic(csv_path, table.to_csv(index=False))
    console.print(_rich_frame(table, "Where does it look (Grad-CAM heat share)"))
    for line in ex.share_notes(centre, frame) + ex.coarse_notes(explained):
        console.print(esc(line), highlight=False)
    for path in [*paths, csv_path]:
        console.print(f"wrote {esc(path)}", highlight=False)
    if out is None:
        console.print(f"`benchbox report {esc(run_dir)}` re-renders report.html with these panels", highlight=False)


@app.command()
def compare(
    run_dir: Path = typer.Argument(..., help="A run directory."),
    a: str = typer.Argument(..., help="First backbone (its name in the suite)."),
    b: str = typer.Argument(..., help="Second backbone."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Data set, when they share several."),
    n_boot: int = typer.Option(1000, "--n-boot", min=10, help="Bootstrap resamples (patients)."),
):
    """Paired comparison of two backbones on the same samples: McNemar and the AUC difference."""
    from benchbox.views.compare import compare as run_compare

    r = run_compare(run_dir, a, b, dataset, n_boot)
    m = r["mcnemar"]
    table = Table(title=esc(f"{a} vs {b} on {r['dataset']} ({r['n']} shared test images)"), show_header=False)
    table.add_column("")
    table.add_column("")
    table.add_row("accuracy", f"{100 * r['accuracy_a']:.2f}% vs {100 * r['accuracy_b']:.2f}%")
    table.add_row("right only by " + esc(a), str(m["only_a"]))
    table.add_row("right only by " + esc(b), str(m["only_b"]))
    table.add_row(
        f"McNemar ({m['method']})",
        f"p = {m['p_value']:.4g}" + (" (significant at 0.05)" if m["p_value"] < 0.05 else ""),
    )
    lo, hi = r["auc_difference_ci"]
    table.add_row("AUC", f"{r['auc_a']:.4f} vs {r['auc_b']:.4f}")
    table.add_row(
        "AUC difference (a − b)", f"{r['auc_difference']:+.4f} [95% CI {lo:+.4f}, {hi:+.4f}], patient bootstrap"
    )
    console.print(table)


@app.command()
def leaderboard(
    runs: list[Path] = typer.Argument(..., help="Run directories (e.g. runs/*)."),
    metric: Optional[str] = typer.Option(
        None, "--metric", help="Any metric the runs' evaluators declare (default: the first one declared)."
    ),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Only this data set (name or plugin)."),
    format: str = typer.Option("markdown", "--format", "-f", help="An output format: markdown, csv, html, json..."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file."),
):
    """Rank data set x backbone entries across runs, grouping entries that are not comparable."""
    from benchbox.views.leaderboard import choose_metric, collect, rank

    registry = _registry()
    chosen = _output_format(registry, format, "leaderboard")
    if output is not None:
        _output_file(output, example=f"leaderboard{chosen.suffix}")
    entries, problems, metrics = collect(runs, registry, dataset)
    spec = choose_metric(metrics, metric)
    text = chosen.render_leaderboard(rank(entries, spec), spec, output)
    for p in problems:
        err_console.print(f"warning: {p}", markup=False, highlight=False)
    if output:
        output.write_text(text, encoding="utf-8")
        console.print(f"wrote {output}", highlight=False)
    else:
        sys.stdout.write(text)


@app.command()
def bench(
    backbones: list[str] = typer.Argument(..., help="Backbone plugins, e.g. keras/mobilenet_v2 torch/mobilenet_v2."),
    batch_sizes: str = typer.Option("1,64", "--batch-sizes", help="Inference batch sizes, comma-separated."),
    train_batch_size: int = typer.Option(64, "--train-batch-size", help="Training batch size (0: skip training)."),
    input_size: str = typer.Option("200x266", "--input", help="HEIGHTxWIDTH."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    amp: bool = typer.Option(False, "--amp", help="Mixed precision (AMP / Keras mixed policy)."),
    channels_last: bool = typer.Option(False, "--channels-last", help="PyTorch channels-last memory format."),
    min_seconds: float = typer.Option(2.0, "--min-seconds", help="Measure each figure for at least this long."),
    output: Path = typer.Option(Path("bench.csv"), "--output", "-o", help="CSV file to write."),
    threads: str = typer.Option("auto", "--threads", callback=_threads_option, help=THREADS_HELP),
):
    """Inference and training throughput, timm-style: warm-up excluded, synchronised clocks."""
    import pandas as pd

    from benchbox.bench import CSV_COLUMNS, bench_backbone

    choose_threads(threads)
    if device not in ("cpu", "cuda"):
        raise BenchboxError(f"--device {device!r}: choose cpu or cuda")
    try:
        sizes = [int(v) for v in batch_sizes.split(",") if v.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise BenchboxError(f"--batch-sizes {batch_sizes!r}: write positive integers separated by commas, e.g. 1,64")
    if train_batch_size < 0:
        raise BenchboxError(f"--train-batch-size {train_batch_size}: must be positive (or 0 to skip training)")
    if min_seconds <= 0:
        raise BenchboxError(f"--min-seconds {min_seconds}: must be positive")
    size = parse_size(input_size)
    _output_file(output, example="bench.csv")
    registry = _registry()
    rows = []
    for name in backbones:
        backbone = registry.get("backbone", name)
        if not hasattr(backbone, "bench_steps"):
            raise BenchboxError(f"{name}: this plugin does not implement bench_steps(); it cannot be benchmarked")
        options = {**backbone.defaults, "input_size": list(size)}
        console.print(f"benchmarking {esc(name)} on {device} ...", highlight=False)
        rows += bench_backbone(
            backbone, options, sizes, train_batch_size, device, amp, channels_last, min_seconds=min_seconds
        )
    frame = pd.DataFrame(rows)[CSV_COLUMNS]
    frame.to_csv(output, index=False)
    console.print(
        _rich_frame(
            frame[
                [
                    "model",
                    "infer_batch_size",
                    "infer_samples_per_sec",
                    "infer_step_time",
                    "infer_step_time_p95",
                    "train_samples_per_sec",
                    "gmacs",
                    "param_count",
                ]
            ],
            f"throughput on {device}",
        )
    )
    console.print(f"wrote {output}")


def _rich_frame(frame, title):
    table = Table(title=esc(title))
    for col in frame.columns:
        table.add_column(esc(col))
    for _, row in frame.iterrows():
        table.add_row(*[esc(v) for v in row])
    return table


@backbones_app.command("list")
def backbones_list(
    framework: Optional[str] = typer.Option(
        None, "--framework", help="Only this framework or family prefix: keras, torch, timm, txv..."
    ),
    pattern: Optional[str] = typer.Option(
        None, "--filter", help="Shell-style pattern on the name or the model part, e.g. 'convnext*'."
    ),
):
    """Every backbone name a suite may use: the study's and every member of a family (timm/<model>...)."""
    registry = _registry()
    table = registry.backbones
    names = table.listing(framework, pattern)
    for name in names:
        console.print(esc(name), highlight=False)
    for prefix, (family, _, _) in sorted(table.families.items()):
        avail = family.availability()
        if not avail.ok and (framework in (None, prefix, family.framework)):
            err_console.print(f"[yellow]{esc(prefix)}/<model> unavailable:[/] {esc(avail.reason)}", highlight=False)
    if not names:
        raise BenchboxError(
            "no backbone matches"
            + (f" --framework {framework}" if framework else "")
            + (f" --filter {pattern!r}" if pattern else "")
            + f"; frameworks and families: {', '.join(sorted(_frameworks(table)))}"
        )
    err_console.print(f"{len(names)} backbone(s)", highlight=False)


def _frameworks(table) -> set[str]:
    names = {e.obj.framework for e in table.values() if getattr(e.obj, "framework", "")}
    return names | set(table.families) | {f.framework for f, _, _ in table.families.values()}


@backbones_app.command("describe")
def backbones_describe(
    name: str = typer.Argument(..., help="Backbone plugin, e.g. keras/inception_v3."),
    cutoff: Optional[int] = typer.Option(None, "--cutoff", help="Frozen layers (default: the study's)."),
    freeze: Optional[str] = typer.Option(
        None, "--freeze", help='What to freeze: "none", "all", a fraction like 0.5, or a layer/module name.'
    ),
    input_size: str = typer.Option("200x266", "--input", help="HEIGHTxWIDTH."),
):
    """Parameters (total / frozen / trainable), depth, last frozen layer, preprocessing, MACs."""
    from benchbox.suite import plugin_option_problems

    registry = _registry()
    backbone = registry.get("backbone", name)
    options = dict(backbone.defaults)
    if cutoff is not None:
        options["cutoff"] = cutoff
    if freeze is not None:
        if "freeze" not in options:
            raise BenchboxError(f"{name} has no freeze option; its options: {', '.join(sorted(options))}")
        options["freeze"] = _freeze_value(freeze)
    size = parse_size(input_size)
    problems = plugin_option_problems(backbone, name, {**options, "weights": "none"})
    if problems:
        raise BenchboxError(f"{name}: " + "; ".join(problems))
    facts = backbone.describe(options, size)
    table = Table(title=esc(name), show_header=False)
    table.add_column("fact")
    table.add_column("value")
    for key, value in facts.items():
        table.add_row(esc(key), f"{value:,}" if isinstance(value, int) else esc(value))
    console.print(table)
    if getattr(type(backbone), "describe", None) is Backbone.describe:  # the contract's default, not overridden
        console.print(
            f"{name} has no describe(): its plugin shows no parameters, depth or frozen layers "
            "(a plugin adds them with describe(options, input_size), see docs/plugins.md)",
            markup=False,
            highlight=False,
        )


@weights_app.command("fetch")
def weights_fetch(
    names: Optional[list[str]] = typer.Argument(None, help="Backbones (default: every available one)."),
    alpha: float = typer.Option(1.0, "--alpha", help="MobileNet v2 width multiplier (Keras)."),
    input_size: str = typer.Option(
        "224x224", "--input", help="HEIGHTxWIDTH (Keras MobileNet v2 picks its file by it)."
    ),
):
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
            console.print(f"[green]ok[/] {esc(name)}", highlight=False)
        except BenchboxError as exc:
            failed.append(name)
            err_console.print(f"[red]failed[/] {esc(name)}: {esc(exc)}", highlight=False)
    if failed:
        raise PluginError(f"could not fetch weights for {len(failed)} backbone(s): {', '.join(failed)}")


def _default_samples(registry, name: str, seed: int, data_dir):
    """A data set's samples with its default options (describe, export), through the error boundary."""
    from benchbox.harness import call_plugin

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
    names: Optional[list[str]] = typer.Argument(None, help="Dataset plugins (default: all)."),
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", envvar="BENCHBOX_DATA", callback=_data_dir_option, help="Root of the raw data sources."
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the composition draw."),
):
    """Class counts, patients and sources of data sets (their default options)."""
    from benchbox.contracts import SampleSet

    registry = _registry()
    failed = []
    for name in names or sorted(registry.datasets):
        try:
            samples = _default_samples(registry, name, seed, data_dir)
            if not isinstance(samples, SampleSet):
                raise PluginError(
                    f"dataset plugin {name} returned {type(samples).__name__} from samples(); it must "
                    "return a benchbox.contracts.SampleSet"
                )
        except BenchboxError as exc:
            failed.append(name)
            console.print(f"[yellow]{esc(name)}: unavailable here[/] — {esc(exc)}", highlight=False)
            continue
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
    if names and failed:
        raise BenchboxError(f"could not describe {', '.join(failed)} (reasons above)")


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
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", envvar="BENCHBOX_DATA", callback=_data_dir_option, help="Root to download into."
    ),
):
    """Download, verify and unpack raw data sources into the data root."""
    from benchbox.datadir import data_root

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
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", envvar="BENCHBOX_DATA", callback=_data_dir_option, help="Root that holds the sources."
    ),
):
    """Check a data root against the sources' shipped manifests: missing, changed and extra files."""
    from benchbox.datadir import data_root

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
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", envvar="BENCHBOX_DATA", callback=_data_dir_option, help="Root of the raw data sources."
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the data set's draw."),
    option: Optional[list[str]] = typer.Option(
        None,
        "--option",
        help="KEY=VALUE: a data set option as in a suite (VALUE read as TOML), e.g. lesion_contrast=3; repeatable.",
    ),
):
    """Write a data set as a class-folder tree and a CSV (e.g. the synthetic set, for a walk-through)."""
    from benchbox.export import export_dataset, parse_options
    from benchbox.harness import call_plugin

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


@plugin_app.command("new")
def plugin_new(
    name: str = typer.Argument(..., help="Short name, e.g. resnet (makes benchbox-resnet/)."),
    directory: Path = typer.Option(Path("."), "--dir", help="Where to create the package."),
):
    """Scaffold a backbone plugin package: entry point, a Keras ResNet50 backbone, conformance test."""
    from benchbox.scaffold import scaffold

    root = scaffold(name, directory)
    console.print(
        esc(f"created {root}\n  next: pip install -e {root} && benchbox plugins && python -m pytest {root}/tests")
    )


def _freeze_value(text: str):
    """--freeze 0.5 means a fraction; anything else is a word or a layer name."""
    try:
        return float(text) if any(ch.isdigit() for ch in text) and "." in text else text
    except ValueError:
        return text


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise BenchboxError(f"input size {text!r}: write HEIGHTxWIDTH, e.g. 200x266") from None
    if min(h, w) < 32 or max(h, w) > 2048:
        raise BenchboxError(f"input size {text!r}: each side must be between 32 and 2048 pixels")
    return h, w


def _crash_log(text: str) -> Path:
    path = Path(tempfile.gettempdir()) / f"benchbox-crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    path.write_text(text, encoding="utf-8")
    return path


def _show_error(exc: BenchboxError) -> None:
    err_console.print("[bold red]error:[/] ", end="")
    err_console.print(str(exc), markup=False, highlight=False)
    if exc.detail and STATE["verbose"]:
        err_console.print(exc.detail, markup=False, highlight=False)
    elif exc.detail:
        err_console.print("(run with --verbose to see the plugin's traceback)", style="dim")


#: the core's command groups, by name, for plugins that add a subcommand to one (benchbox_cli_commands)
GROUPS = {
    "backbones": backbones_app,
    "plugin": plugin_app,
    "data": data_app,
    "weights": weights_app,
    "export": export_app,
}
_ADDED: dict = {}  # plugin name -> (its CliOptions); a plugin's commands are added once per process


def _command():
    """The click command of the whole CLI: the core's commands, then what plugins add through
    ``benchbox_cli_commands`` (commands) and ``benchbox_cli_options`` (options of run and bench,
    applied before the command body runs; their values never reach it)."""

    from benchbox.plugins import load_registry

    registry = STATE["registry"] = load_registry()
    for impl in registry.pm.hook.benchbox_cli_commands.get_hookimpls():
        if impl.plugin_name in _ADDED:
            continue
        _ADDED[impl.plugin_name] = True
        try:
            impl.function(app=app, groups=GROUPS)
        except Exception as exc:  # a plugin's command must not break the others
            registry.broken.append((impl.plugin_name, f"benchbox_cli_commands failed: {type(exc).__name__}: {exc}"))
    contributed, problems = registry.call_each("benchbox_cli_options")
    registry.broken += [(p.split()[1], p) for p in problems]
    options = [o for _, opts in contributed for o in (opts or [])]
    for info in app.registered_commands:
        original = getattr(info.callback, "__benchbox_original__", info.callback)
        if original in (run, bench):
            info.callback = _with_plugin_options(original, [o for o in options if original is run or o.bench])
    return typer.main.get_command(app)


def _option_name(option) -> str:
    return "plugin_" + option.flag.lstrip("-").replace("-", "_")


def _with_plugin_options(command, options):
    """``command`` with the plugins' options added to its signature (typer builds them like its own);
    each given one is applied (into STATE["overrides"]) before the command body runs, which never sees them."""
    import functools
    import inspect
    from typing import get_type_hints

    signature = inspect.signature(command, eval_str=True)
    taken = {p.name for p in signature.parameters.values()}
    options = [o for o in options if _option_name(o) not in taken]

    @functools.wraps(command)
    def wrapper(**kwargs):
        for o in options:
            value = kwargs.pop(_option_name(o), None)
            if value is not None:
                o.apply(value, STATE["overrides"])
        return command(**kwargs)

    extra = [
        inspect.Parameter(
            _option_name(o), inspect.Parameter.KEYWORD_ONLY, default=typer.Option(None, o.flag, help=o.help),
            annotation=Optional[o.type],
        )
        for o in options
    ]  # fmt: skip
    wrapper.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *extra])
    wrapper.__annotations__ = {**get_type_hints(command), **{p.name: p.annotation for p in extra}}
    wrapper.__benchbox_original__ = command
    return wrapper


def main(argv: list[str] | None = None) -> None:
    from typer import exceptions as typer_exc
    from typer._click import exceptions as click_exc

    args = sys.argv[1:] if argv is None else argv
    STATE.update(verbose="--verbose" in args or "-v" in args, overrides={}, registry=None)
    try:
        rv = _command().main(args=args, standalone_mode=False, prog_name="benchbox")
    except Interrupted as exc:
        err_console.print(str(exc), markup=False, highlight=False)
        sys.exit(130)
    except BenchboxError as exc:
        _show_error(exc)
        sys.exit(1)
    except (typer_exc.Abort, KeyboardInterrupt):
        err_console.print("interrupted; rerun the same command to resume (finished folds are kept)")
        sys.exit(130)
    except click_exc.ClickException as exc:  # usage errors: click's one-line message and exit 2
        exc.show()
        sys.exit(exc.exit_code)
    except typer_exc.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception:
        log = _crash_log(traceback.format_exc())
        err_console.print(
            f"[bold red]internal error:[/] {esc(repr(sys.exc_info()[1]))} — a bug in benchbox or a plugin; "
            f"the traceback is in {esc(log)}. Please report it with that file.",
            highlight=False,
        )
        if STATE["verbose"]:
            err_console.print(log.read_text(), markup=False, highlight=False)
        sys.exit(1)
    if rv == 130:  # typer turned a Ctrl-C into exit code 130
        err_console.print("interrupted; rerun the same command to resume (finished folds are kept)")
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
