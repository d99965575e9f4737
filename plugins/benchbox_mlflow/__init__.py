"""MLflow tracking for benchbox runs: a Tracker, the ``--mlflow`` option and `benchbox export mlflow`
(docs/tracking.md).

Turned on by a suite's ``[tracking] mlflow = { uri = "...", experiment = "..." }`` or by
``benchbox run --mlflow URI``; the runner hands the table to the tracker's ``start``. Each benchbox run directory becomes one parent MLflow run with one child
run per cell: params, per-fold metrics (step = fold), summary metrics with their intervals, the
report files and plots as artefacts, provenance tags. ``benchbox export mlflow RUN_DIR`` does the
same afterwards from the stored records (:func:`export_run`).

Failures: MLflow missing, or the tracking server unreachable when the run starts, stops the run
before anything is trained (a PluginError naming mlflow and what to do). A failure *during* the run
never loses a result (every fold record is stored before the hooks run): the plugin warns once, stops
logging for the rest of the session, and at the end names the command that sends what is missing
(`benchbox export mlflow RUN_DIR`, which logs only what the server does not have yet).

This module imports MLflow only when a run is tracked: the plugin loads without it.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from benchbox import hookimpl
from benchbox.contracts import Availability, CliOption, Tracker
from benchbox.errors import BenchboxError, PluginError


@dataclass
class _Live:
    """The mirror of a run being executed in this process, and its first failure, if any."""

    mirror: object
    error: str = ""
    missed: int = 0  # folds not sent after a failure


def _key(run_dir) -> str:
    return str(Path(run_dir).resolve())


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class MlflowTracker(Tracker):
    """Mirrors a run into MLflow: a parent run, one child per cell, per-fold and summary metrics."""

    name = "mlflow"
    description = "MLflow: a parent run per run directory, a child per cell (docs/tracking.md)"
    defaults = {"uri": "", "experiment": "", "artifact_location": ""}

    def __init__(self):
        self._live: dict[str, _Live] = {}  # absolute run directory -> its live mirror

    def availability(self) -> Availability:
        if importlib.util.find_spec("mlflow") is None:
            return Availability(False, "MLflow is not installed: pip install 'benchbox[mlflow]'")
        return Availability(True)

    def check_options(self, options) -> list[str]:
        return [
            f"{key}: must not be empty (leave the key out for the default)"
            for key, value in options.items()
            if isinstance(value, str) and not value.strip()
        ]

    def start(self, run_dir, manifest, options):
        self._live.pop(_key(run_dir), None)
        from benchbox_mlflow.mirror import Mirror

        config = dict(options)
        try:
            mirror = Mirror.open(run_dir, {**manifest, "tracking": {"mlflow": config}}, config)
            mirror.start()
        except Exception as exc:
            where = config.get("uri") or "MLflow's default tracking URI (MLFLOW_TRACKING_URI)"
            reason = str(exc) if isinstance(exc, BenchboxError) else f"mlflow: cannot log to {where}: {_describe(exc)}"
            raise PluginError(
                f"{reason}. Nothing was trained in this session: fix it and rerun, or run without tracking "
                f"(no [tracking] table, no --mlflow) and send the results later with `benchbox export mlflow "
                f"{run_dir} --uri URI`",
                detail=traceback.format_exc(),
            ) from exc
        self._live[_key(run_dir)] = _Live(mirror)

    def fold_end(self, run_dir, record, options):
        live = self._live.get(_key(run_dir))
        if live is None:
            return
        if live.error:
            live.missed += 1
            return
        try:
            live.mirror.fold(record)
        except Exception as exc:
            _failed(live, run_dir, exc, f"fold {record.fold} of {record.cell}")

    def end(self, run_dir, result, options):
        live = self._live.pop(_key(run_dir), None)
        if live is None:
            return
        if not live.error:
            try:
                live.mirror.end(result)
            except Exception as exc:
                _failed(live, run_dir, exc, "the run's summary")
        if live.error:
            _say(
                f"warning: mlflow: {live.missed} fold(s) and the run's summary were not sent to {live.mirror.uri}. "
                f"Every result is stored in {run_dir}; send what is missing with `benchbox export mlflow {run_dir} "
                f"--uri {live.mirror.uri}` (it logs only what the server lacks)"
            )


def _mlflow_option(uri: str, overrides: dict) -> None:
    """--mlflow URI: turn this tracker on for the run (the experiment defaults to the suite's name)."""
    if not uri.strip():
        raise BenchboxError("--mlflow: give a tracking URI, e.g. sqlite:///mlflow.db or http://HOST:5000")
    tracking = overrides.setdefault("tracking", {})
    tracking["mlflow"] = {**tracking.get("mlflow", {}), "uri": uri}


@hookimpl
def benchbox_trackers():
    return [MlflowTracker()]


@hookimpl
def benchbox_cli_options():
    return [
        CliOption(
            "--mlflow",
            "Also log the run to this MLflow tracking URI (overrides the suite's tracking.mlflow table).",
            _mlflow_option,
            bench=False,
        )
    ]


@hookimpl
def benchbox_cli_commands(app, groups):
    from benchbox_mlflow.command import add_export_command

    add_export_command(groups["export"])


def _failed(live: _Live, run_dir, exc: Exception, what: str) -> None:
    """Warn once, keep the traceback in the run's log, stop logging for this session."""
    from benchbox.execute.store import RunStore

    live.error = _describe(exc)
    live.missed += 1 if what.startswith("fold") else 0
    try:
        RunStore(run_dir).log(f"mlflow: logging {what} to {live.mirror.uri} failed\n{traceback.format_exc()}")
    except OSError:
        pass
    _say(
        f"warning: mlflow: logging {what} to {live.mirror.uri} failed ({live.error}); the run goes on without "
        f"tracking (results are stored in {run_dir}; traceback in {Path(run_dir) / 'benchbox.log'})"
    )


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def export_run(run_dir, registry, uri: str | None = None, experiment: str | None = None) -> dict:
    """Mirror a stored run (finished, interrupted or made before tracking) into MLflow, with the
    same structure as a run tracked live; logs only what the server does not have yet.

    ``uri``: default the server this run was last mirrored to (RUN_DIR/mlflow.json), else
    MLFLOW_TRACKING_URI. ``experiment``: default the one it was mirrored to there, else the suite
    name. Returns where it went and how many metric values were new."""
    import os

    from benchbox.execute.store import RunStore
    from benchbox.results.summary import summarise
    from benchbox_mlflow.mirror import Mirror, read_state, resolve_uri

    run_dir = Path(run_dir)
    store = RunStore(run_dir)
    manifest = store.manifest()
    state = read_state(run_dir)
    if not uri and not state.get("last_uri") and not os.environ.get("MLFLOW_TRACKING_URI"):
        raise BenchboxError(
            f"{run_dir} was never mirrored to MLflow: name the tracking server with --uri (e.g. --uri "
            "sqlite:///mlflow.db, or http://HOST:5000), or set MLFLOW_TRACKING_URI"
        )
    uri = resolve_uri(uri or state.get("last_uri"))
    config = {"uri": uri, "experiment": experiment or (state["servers"].get(uri) or {}).get("experiment")}
    store.lock()
    try:
        result = summarise(store, registry, with_sections=False)
        try:
            mirror = Mirror.open(run_dir, {**manifest, "tracking": {"mlflow": config}}, config)
            mirror.start()
            mirror.end(result)
        except BenchboxError:
            raise
        except Exception as exc:
            raise PluginError(
                f"mlflow: exporting {run_dir} to {uri} failed: {_describe(exc)}. "
                "What was logged stays; rerun the same command when the server is reachable (it logs only "
                "what is missing)",
                detail=traceback.format_exc(),
            ) from exc
    finally:
        store.unlock()
    return {
        "uri": mirror.uri,
        "experiment": mirror.experiment,
        "experiment_id": mirror.experiment_id,
        "parent_run_id": mirror.parent_id,
        "children": len(mirror.children),
        "folds": len(result.records),
        "logged": mirror.logged,
        "problems": list(result.problems),
    }
