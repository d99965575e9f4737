"""`benchbox report`, `compare` and `leaderboard`: views of stored runs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from benchbox.cli.common import (
    _output_file,
    _registry,
    app,
    console,
    err_console,
    esc,
)
from benchbox.errors import BenchboxError, did_you_mean


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


def _format_for_file(registry, output: Path):
    """``report -o FILE`` without --format: the output format whose file suffix FILE has (report.tex: latex)."""
    able = {n: e.obj for n, e in registry.output_formats.items() if e.obj.renders_runs}
    for fmt in able.values():
        if fmt.suffix and output.suffix.lower() == fmt.suffix.lower():
            return fmt
    raise BenchboxError(
        f"--output {output}: no output format writes {output.suffix or 'suffix-less'} files; add --format "
        f"(one of {', '.join(able)}) or name the file by its format (report.md, report.tex...)"
    )


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A run directory written by `benchbox run`, or a bundle."),
    format: str = typer.Option(
        "terminal",
        "--format",
        "-f",
        help="terminal (default; with -o FILE: the format of FILE's suffix), or an output format: markdown, csv, latex, "
        "html, json...",
    ),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
):
    """Re-render a run's tables from its stored fold records alone.

    The run's report files (report.html, report.md, summary.csv, plots/) are rewritten too."""
    from benchbox.execute.runner import rerender
    from benchbox.results.bundle import opened
    from benchbox.results.views.report import print_terminal

    registry = _registry()
    if format != "terminal":
        chosen = _output_format(registry, format, "run")
    if output is not None:
        _output_file(output)
    if format == "terminal":  # the report command's own screen view (rich tables), not an output format
        chosen = None if output is None else _format_for_file(registry, output)
    with opened(run_dir) as readable:  # a bundle: extracted into a temporary folder, its views written there
        result = rerender(readable, registry)
        if chosen is None:
            print_terminal(result, console)
            return
        text = chosen.render_run(result)
    if output:
        output.write_text(text, encoding="utf-8")
        console.print(f"wrote {output}", highlight=False)
    else:
        sys.stdout.write(text)


@app.command()
def compare(
    run_dir: Path = typer.Argument(..., help="A run directory, or a bundle."),
    a: str = typer.Argument(..., help="First backbone (its name in the suite)."),
    b: str = typer.Argument(..., help="Second backbone."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Data set, when they share several."),
    n_boot: int = typer.Option(1000, "--n-boot", min=10, help="Bootstrap resamples (patients)."),
):
    """Paired comparison of two backbones on the same samples: McNemar and the AUC difference."""
    from benchbox.results.bundle import opened
    from benchbox.results.views.compare import compare as run_compare

    with opened(run_dir) as readable:
        r = run_compare(readable, a, b, dataset, n_boot)
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
    runs: list[Path] = typer.Argument(..., help="Run directories (e.g. runs/*) and/or bundles (benchbox bundle)."),
    metric: Optional[str] = typer.Option(
        None, "--metric", help="Any metric the runs' evaluators declare (default: the first one declared)."
    ),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Only this data set (name or plugin)."),
    format: str = typer.Option("markdown", "--format", "-f", help="An output format: markdown, csv, html, json..."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file."),
):
    """Rank data set x backbone entries across runs, grouping entries that are not comparable."""
    from benchbox.results.views.leaderboard import choose_metric, collect_sources, rank

    registry = _registry()
    chosen = _output_format(registry, format, "leaderboard")
    if output is not None:
        _output_file(output, example=f"leaderboard{chosen.suffix}")
    entries, problems, metrics = collect_sources(runs, registry, dataset)
    spec = choose_metric(metrics, metric)
    text = chosen.render_leaderboard(rank(entries, spec), spec, output)
    for p in problems:
        err_console.print(f"warning: {p}", markup=False, highlight=False)
    if output:
        output.write_text(text, encoding="utf-8")
        console.print(f"wrote {output}", highlight=False)
    else:
        sys.stdout.write(text)
