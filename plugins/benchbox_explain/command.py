"""`benchbox explain RUN_DIR`: this plugin's command, added through ``benchbox_cli_commands``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from benchbox.errors import BenchboxError


def add_command(app: typer.Typer) -> None:
    @app.command()
    def explain(
        run_dir: Path = typer.Argument(
            ..., help="A run directory written by `benchbox run` with [explain] in its suite."
        ),
        out: Optional[Path] = typer.Option(
            None, "--out", help="Folder for the panels and heat_share.csv (default: RUN_DIR/plots)."
        ),
        images: int = typer.Option(
            4, "--images", min=1, help="Images per class in each panel (wrong predictions first)."
        ),
    ):
        """(Re)draw a run's Grad-CAM panels and its heat-share table from the maps the run stored."""
        from benchbox.cli.common import _rich_frame, console, err_console, esc
        from benchbox.execute.records import group_by_cell
        from benchbox.execute.store import RunStore, write_atomic
        from benchbox_explain.maps import stored
        from benchbox_explain.views import NO_EXPLANATIONS, coarse_notes, draw_panels, share_frame, share_notes

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
        explained = stored(run_dir, {c.slug: c for c in cells}, damaged)
        for problem in damaged:
            err_console.print(f"warning: {problem}", markup=False, highlight=False)
        if not explained:
            why = sorted(
                {str(r.info["explain"].get("status")) for r in records if isinstance(r.info.get("explain"), dict)}
            )
            if why:
                raise BenchboxError(f"{run_dir}: its suite has [explain], but no fold stored maps: " + "; ".join(why))
            raise BenchboxError(NO_EXPLANATIONS.format(run=run_dir))
        settings = (manifest.get("suite_as_run") or {}).get("explain") or {}
        centre, frame = float(settings.get("centre", 0.6)), float(settings.get("frame", 0.1))
        target = out if out is not None else Path(run_dir) / "plots"
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BenchboxError(
                f"--out {target}: cannot create that folder ({exc.strerror or exc}); choose another"
            ) from None
        paths = draw_panels(explained, target, images)
        table = share_frame(explained, cells, centre, frame)
        csv_path = target / "heat_share.csv"
        write_atomic(csv_path, table.to_csv(index=False))
        console.print(_rich_frame(table, "Where does it look (Grad-CAM heat share)"))
        for line in share_notes(centre, frame) + coarse_notes(explained):
            console.print(esc(line), highlight=False)
        for path in [*paths, csv_path]:
            console.print(f"wrote {esc(path)}", highlight=False)
        if out is None:
            console.print(f"`benchbox report {esc(run_dir)}` re-renders report.html with these panels", highlight=False)
