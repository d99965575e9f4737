"""`benchbox run`, `validate` and `bench`: running suites and measuring backbones."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from benchbox.cli.common import (
    STATE,
    THREADS_HELP,
    Interrupted,
    RichReporter,
    _output_file,
    _registry,
    _resume_hint,
    _rich_frame,
    _threads_option,
    app,
    console,
    data_dir_option,
    esc,
    parse_size,
)
from benchbox.errors import BenchboxError, PluginError, did_you_mean
from benchbox.execute.environment import busy_note, choose_threads


@app.command()
def run(
    suite: Path = typer.Argument(..., help="Suite file (TOML)."),
    data_dir: Optional[Path] = data_dir_option(),
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
    from benchbox.define.suite import load_suite, with_tracking_overrides
    from benchbox.execute.executors import choose_executor
    from benchbox.execute.runner import run_suite
    from benchbox.results.views.report import print_terminal

    chosen = choose_threads(threads)
    registry = _registry()
    s = load_suite(suite, registry, check_availability=True, check_networks=True)
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
    for flag, value in (
        ("--cpus-per-fold", cpus_per_fold),
        ("--gpus-per-fold", gpus_per_fold),
        ("--max-retries", max_retries),
    ):
        if value is not None and value < 0:
            raise BenchboxError(f"{flag} must not be negative")
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
    data_dir: Optional[Path] = data_dir_option(),
    no_data: bool = typer.Option(False, "--no-data", help="Check the file only; do not read the data sets' tables."),
):
    """Check a suite and its data sets' tables, listing every problem at once.

    Files are listed and CSVs read; no pixels are decoded. A layer the suite names (e.g. [explain] layer)
    is looked up in a network built with random weights."""
    from benchbox.define.suite import load_suite

    s = load_suite(
        suite, _registry(), check_data=not no_data, data_dir=str(data_dir) if data_dir else None, check_networks=True
    )
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
    for alias, counts in s.data_counts.items():  # what the data hold, to check before spending the training time
        per_class = ", ".join(f"{c} {n} ({p} patients)" for c, (n, p) in counts["classes"].items())
        console.print(
            f"  data set {alias}: {counts['images']} images, {counts['patients']} patients — {per_class}",
            markup=False,
            highlight=False,
        )


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

    from benchbox.execute.bench import CSV_COLUMNS, bench_backbone

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
