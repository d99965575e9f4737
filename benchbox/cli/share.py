"""`benchbox verify`, `bundle` and `board`: results that leave the machine they were made on."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from benchbox.cli.common import _data_dir_option, _registry, app, console, err_console, esc
from benchbox.errors import BenchboxError


@app.command()
def verify(
    sources: list[Path] = typer.Argument(..., help="Run directories or bundles (benchbox bundle) to check."),
    data_dir: Optional[Path] = typer.Option(
        None,
        "--data-dir",
        envvar="BENCHBOX_DATA",
        callback=_data_dir_option,
        help="Root of the raw data sources, to re-derive the folds (default: the suite's).",
    ),
):
    """Check that a run (or bundle) is what it says: record digests, suite, folds, re-scored metrics.

    Every fold record must match the digest the manifest lists for it; each record must have tested its
    fold of the stored split; the folds re-derived from the suite, its seed and the data (when the data
    are here) must equal the stored split; the metrics re-scored from the stored predictions must equal
    the stored summary. Exit status 1 when anything fails."""
    from benchbox.results.bundle import opened
    from benchbox.results.verify import describe, verify_run

    registry = _registry()
    failed = 0
    for source in sources:
        with opened(source) as run_dir:
            verdict = verify_run(run_dir, registry, str(data_dir) if data_dir else None, source=source)
        console.print(f"[bold]{esc(source)}[/]: " + ("verified" if verdict.passed else "[red]FAILED[/]"))
        for line in describe(verdict):
            (err_console if line.startswith("FAILED") else console).print(f"  {esc(line)}", highlight=False)
        failed += not verdict.passed
    if failed:
        raise BenchboxError(f"{failed} of {len(sources)} failed verification (each failure is named above)")


@app.command()
def bundle(
    run_dir: Path = typer.Argument(..., help="A run directory written by `benchbox run`."),
    output: Path = typer.Option(..., "--output", "-o", help="The bundle file to write (e.g. RUN.bbx.zip)."),
    hash_ids: bool = typer.Option(
        False, "--hash-ids", help="Store sample and patient ids as sha256 digests (splits and pairing survive)."
    ),
):
    """Write a run as one portable file: manifest, suite, splits, fold records, summary; no images or
    absolute paths. Every command that reads a run reads the bundle."""
    from benchbox.results.bundle import write_bundle

    if not run_dir.is_dir():
        raise BenchboxError(f"{run_dir}: not a run directory (give the folder `benchbox run` wrote)")
    index = write_bundle(run_dir, output, _registry(), hash_ids=hash_ids)
    records = sum(1 for n in index["members"] if n.startswith("folds/"))
    console.print(f"wrote {esc(output)}: {records} fold record(s), {output.stat().st_size} bytes", highlight=False)
    for change in index["changes"]:
        console.print(f"  {esc(change)}", highlight=False)
