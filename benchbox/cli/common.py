"""What every command shares: the typer applications, consoles, the registry, option checks and
progress bars."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape as rich_escape
from rich.progress import Progress
from rich.table import Table

from benchbox.errors import BenchboxError

# plain help text: rich markup would eat every [explain] and [tracking] and show each flag as <bool>
app = typer.Typer(
    rich_markup_mode=None,
    help="Honest, reproducible comparisons of CNN backbones on small medical imaging data sets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
backbones_app = typer.Typer(rich_markup_mode=None, help="Inspect backbone plugins.", no_args_is_help=True)
app.add_typer(backbones_app, name="backbones")
plugin_app = typer.Typer(rich_markup_mode=None, help="Create plugins.", no_args_is_help=True)
app.add_typer(plugin_app, name="plugin")
data_app = typer.Typer(
    rich_markup_mode=None, help="Data sets: describe, fetch, verify and export them.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
weights_app = typer.Typer(
    rich_markup_mode=None, help="ImageNet weights in the frameworks' caches.", no_args_is_help=True
)
app.add_typer(weights_app, name="weights")
export_app = typer.Typer(rich_markup_mode=None, help="Send stored runs to an experiment tracker.", no_args_is_help=True)
app.add_typer(export_app, name="export")
# a terminal's own width; piped or to a file: COLUMNS when set (rich reads it), else 200
_COLUMNS_SET = os.environ.get("COLUMNS", "").isdigit()
THREADS_HELP = (
    "Framework threads per process (OMP_NUM_THREADS, TF_NUM_INTRAOP_THREADS, BLAS pools): auto (default) sizes "
    "them to the cores free at the start (affinity, CPU quota, cores busy with other work), or a number."
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


def data_dir_option(help: str = "Root of the raw data sources (default: user cache).") -> Optional[Path]:
    """--data-dir (or BENCHBOX_DATA): the same option, checked the same way, on every command that reads data."""
    return typer.Option(None, "--data-dir", envvar="BENCHBOX_DATA", callback=_data_dir_option, help=help)


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


def _output_file(output: Path, option: str = "--output", example: str = "report.md") -> Path:
    """A file path a command may write: not a folder, its folder exists."""
    if output.is_dir():
        raise BenchboxError(f"{option} {output} is a folder; name a file, e.g. {output / example}")
    if not output.parent.exists():
        raise BenchboxError(f"{option} {output}: folder {output.parent} does not exist; create it first")
    return output


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise BenchboxError(f"input size {text!r}: write HEIGHTxWIDTH, e.g. 200x266") from None
    if min(h, w) < 32 or max(h, w) > 2048:
        raise BenchboxError(f"input size {text!r}: each side must be between 32 and 2048 pixels")
    return h, w


def _freeze_value(text: str):
    """--freeze 0.5 means a fraction; anything else is a word or a layer name."""
    try:
        return float(text) if any(ch.isdigit() for ch in text) and "." in text else text
    except ValueError:
        return text


def _rich_frame(frame, title):
    table = Table(title=esc(title))
    for col in frame.columns:
        table.add_column(esc(col))
    for _, row in frame.iterrows():
        table.add_row(*[esc(v) for v in row])
    return table
