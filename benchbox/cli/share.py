"""`benchbox verify`, `bundle` and `board`: results that leave the machine they were made on."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from benchbox.cli.common import _registry, app, console, data_dir_option, err_console, esc
from benchbox.errors import BenchboxError


@app.command()
def verify(
    sources: list[Path] = typer.Argument(..., help="Run directories or bundles (benchbox bundle) to check."),
    data_dir: Optional[Path] = data_dir_option(
        "Root of the raw data sources, to re-derive the folds (default: the suite's)."
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
    """Write a run as one portable file (no images, no absolute paths) that every command reads.

    The bundle holds the manifest, suite, splits, fold records and summary, with the digest of each."""
    from benchbox.results.bundle import write_bundle

    if not run_dir.is_dir():
        raise BenchboxError(f"{run_dir}: not a run directory (give the folder `benchbox run` wrote)")
    index = write_bundle(run_dir, output, _registry(), hash_ids=hash_ids)
    records = sum(1 for n in index["members"] if n.startswith("folds/"))
    console.print(f"wrote {esc(output)}: {records} fold record(s), {output.stat().st_size} bytes", highlight=False)
    for change in index["changes"]:
        console.print(f"  {esc(change)}", highlight=False)


board_app = typer.Typer(
    rich_markup_mode=None,
    help="Boards: verified bundles that build into a static leaderboard site.",
    no_args_is_help=True,
)
app.add_typer(board_app, name="board")


@board_app.command("add")
def board_add(
    board: Path = typer.Argument(..., help="The board folder (created if missing)."),
    bundles: list[Path] = typer.Argument(..., help="Bundles to add (benchbox bundle RUN_DIR -o FILE)."),
    data_dir: Optional[Path] = data_dir_option(
        "Root of the raw data sources, to re-derive each bundle's folds while verifying it."
    ),
):
    """Verify each bundle and add it to the board (one file per entry; nothing is overwritten).

    A bundle that fails verification, cannot be read, or claims an entry's run with other predictions
    is refused with the reason; the others are added. Exit status 1 when any was refused."""
    from benchbox.results import board as boards

    result = boards.add(board, bundles, _registry(), str(data_dir) if data_dir else None)
    for bundle, entry in result.added:
        console.print(f"added {esc(bundle)} as {esc(entry)}", highlight=False)
    for bundle, entry in result.present:
        console.print(f"{esc(bundle)} is already on the board as {esc(entry)}; unchanged", highlight=False)
    for bundle, reason in result.refused:
        err_console.print(f"refused {bundle}: {reason}", markup=False, highlight=False)
    if result.refused:
        raise BenchboxError(f"{len(result.refused)} of {len(bundles)} bundle(s) refused; the board keeps the others")


@board_app.command("build")
def board_build(
    board: Path = typer.Argument(..., help="The board folder (benchbox board add)."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the static site (index.html inside)."),
    metric: Optional[str] = typer.Option(
        None, "--metric", help="Any metric the entries' evaluators declare (default: the first one declared)."
    ),
):
    """Write the board's static site: groups, ranks with ties, paired tests, significance matrices,
    a critical-difference diagram across data sets, one page per entry."""
    from benchbox.results import board as boards

    if not board.is_dir():
        raise BenchboxError(f"{board}: no such board folder (create one with `benchbox board add {board} BUNDLE...`)")
    built = boards.build(board, output, _registry(), metric)
    for p in built["problems"]:
        err_console.print(f"warning: {p}", markup=False, highlight=False)
    console.print(
        f"wrote {esc(output / 'index.html')}: {built['entries']} entries, {built['groups']} group(s), "
        f"{built['pages']} pages",
        highlight=False,
    )
