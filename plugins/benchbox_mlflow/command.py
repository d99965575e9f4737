"""`benchbox export mlflow RUN_DIR`: this plugin's command, added through ``benchbox_cli_commands``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Optional

import typer

from benchbox.errors import PluginError


def add_export_command(export_app: typer.Typer) -> None:
    @export_app.command("mlflow")
    def export_mlflow(
        run_dir: Path = typer.Argument(..., help="A run directory written by `benchbox run` (finished or not)."),
        uri: Optional[str] = typer.Option(
            None, "--uri", help="Tracking URI (default: where this run was last logged, else MLFLOW_TRACKING_URI)."
        ),
        experiment: Optional[str] = typer.Option(None, "--experiment", help="Experiment (default: the suite's name)."),
    ):
        """Log a stored run to MLflow as `benchbox run --mlflow` does: a parent run, a child per cell.

        Idempotent: only what the server does not have yet is logged (docs/tracking.md)."""
        from benchbox.plugins import load_registry
        from benchbox_mlflow import export_run

        if importlib.util.find_spec("mlflow") is None:
            raise PluginError("MLflow is not installed: pip install 'benchbox[mlflow]'")
        registry = load_registry()
        info = export_run(run_dir, registry, uri=uri, experiment=experiment)
        for problem in info["problems"]:
            print(f"warning: {problem}", file=sys.stderr)
        print(
            f"{run_dir} -> {info['uri']}: experiment {info['experiment']!r} (id {info['experiment_id']}), parent run "
            f"{info['parent_run_id']} with {info['children']} child run(s), {info['folds']} fold(s); "
            f"{info['logged']} new metric value(s)"
        )
