"""The MLflow mirror of one benchbox run directory (docs/tracking.md).

One parent MLflow run per run directory, one child run per cell. The live hooks and
`benchbox export mlflow` both go through :class:`Mirror` (``open`` -> ``start`` -> ``fold`` ... ->
``end``), so a run tracked live and a run exported afterwards have the same structure.

Idempotent by construction: the parent is found again through ``RUN_DIR/mlflow.json`` (or the
``benchbox.run_key`` tag), children through their ``benchbox.cell_slug`` tag, params are only added
when missing, and a metric value is logged only if its run has no value at that step for that key.
MLflow is imported here only, and only when a run is tracked or exported.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from benchbox.errors import BenchboxError, PluginError
from benchbox.execute.records import CellKey, FoldRecord, cell_index, data_index
from benchbox.execute.store import RunStore, read_json_object, write_json

STATE_FILE = "mlflow.json"
STATE_FORMAT = "benchbox-mlflow/1"
INSTALL = "pip install 'benchbox[mlflow]'"
FOLD = "fold/"  # prefix of the per-fold metrics (step = fold)
MAX_PARAM = 6000  # MLflow's limits on a param and a tag value
MAX_TAG = 8000
BATCH = 100  # log_batch takes at most 100 params/tags and 1000 entities per call
#: files of the run directory logged as artefacts of the parent run (those that exist)
REPORT_FILES = ("report.md", "report.tex", "report.html", "summary.csv", "confusion.csv", "manifest.json", "suite.toml")
#: per-fold values from a record's ``info`` (the plugin's own breakdown) worth a metric
INFO_METRICS = ("params_total", "params_trainable", "params_frozen")


def import_mlflow():
    """(mlflow, MlflowClient), or a PluginError saying how to install MLflow."""
    try:
        import mlflow
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise PluginError(f"mlflow: MLflow is not installed ({exc}); install it with {INSTALL}") from None
    for noisy in ("alembic", "mlflow.store.db.utils"):  # schema migrations of a new sqlite store
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return mlflow, MlflowClient


def resolve_uri(uri: str | None) -> str:
    """The tracking URI to use: the one given, else MLflow's own default (MLFLOW_TRACKING_URI, else
    its local default). A relative sqlite path is made absolute, so the same store is found again
    from another working directory (and mlflow.json names it unambiguously)."""
    mlflow, _ = import_mlflow()
    uri = uri or mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path, sep, query = uri[len("sqlite:///") :].partition("?")
        if path and path != ":memory:":
            uri = "sqlite:///" + os.path.abspath(path) + sep + query
    return uri


def probe(uri: str, timeout: float = 10.0) -> None:
    """Fail at once when an HTTP tracking server cannot be reached (MLflow's own client retries a
    refused connection for minutes). Any HTTP answer, even an error status, counts as reachable."""
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as exc:
        raise PluginError(
            f"mlflow: cannot reach the tracking server at {uri} ({type(exc).__name__}); start it (e.g. `mlflow "
            "server --backend-store-uri sqlite:///mlflow.db --port 5000`) or fix the URI"
        ) from None


def read_state(run_dir: Path) -> dict:
    """RUN_DIR/mlflow.json: for each tracking URI, the experiment and the parent run of this run."""
    state = read_json_object(Path(run_dir) / STATE_FILE) or {}
    if not isinstance(state.get("servers"), dict):
        state["servers"] = {}
    return state


def run_key(run_dir: Path, manifest: dict) -> str:
    """What identifies a run directory in a tracking server when mlflow.json is gone: its absolute
    path and its start (a directory deleted and run again at the same path is another run)."""
    text = f"{Path(run_dir).resolve()}|{manifest.get('started_at', '')}|{manifest.get('suite_digest', '')}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def millis(stamp: str | None) -> int:
    """A benchbox timestamp (``%Y-%m-%dT%H:%M:%S%z``) in epoch milliseconds; now if unreadable."""
    if stamp:
        try:
            return int(datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z").timestamp() * 1000)
        except ValueError:
            pass
    return int(time.time() * 1000)


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _text(value, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _key(name: str) -> str:
    """An MLflow param/metric/tag key: letters, digits, '_', '-', '.', ' ', '/' only."""
    return re.sub(r"[^\w\-. /]", "_", str(name))[:250]


def fold_metrics(record: FoldRecord) -> dict[str, float]:
    """Cheap, generic figures of one fold, from its record alone (the evaluators' per-fold values
    are added at run end): accuracy and log loss of the test fold, sizes, the harness's timings."""
    out = {
        "n_test": record.n_test,
        "n_train": record.n_train,
        "train_seconds": record.train_seconds,
        "predict_seconds": record.predict_seconds,
        "infer_images_per_sec": record.infer_images_per_sec,
    }
    y = np.asarray(record.y_true, dtype=int)
    p = np.asarray(record.probabilities, dtype=float)
    if len(y):
        out["accuracy"] = float(np.mean(p.argmax(axis=1) == y))
        out["log_loss"] = float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-15, 1.0))))
    for name in INFO_METRICS:
        if name in (record.info or {}):
            out[name] = record.info[name]
    return {k: v for k, v in ((k, _number(v)) for k, v in out.items()) if v is not None}


def run_params(manifest: dict) -> dict:
    """The suite's parameters: seed, protocol, training, evaluators."""
    out = {
        "suite": manifest.get("suite"),
        "seed": manifest.get("seed"),
        "protocol": manifest.get("protocol_label"),
        "evaluators": ",".join(manifest.get("evaluators") or []),
    }
    out.update({f"protocol.{k}": v for k, v in (manifest.get("protocol") or {}).items()})
    out.update({f"training.{k}": v for k, v in (manifest.get("training") or {}).items()})
    if manifest.get("probes"):
        out["probes"] = manifest["probes"]
    return out


def cell_params(manifest: dict, cell: CellKey, meta: dict) -> dict:
    """A cell's parameters: the suite's, the data set's and the backbone's options."""
    out = run_params(manifest)
    dmeta = data_index(manifest).get(cell.data, {})
    out.update(
        {
            "dataset": cell.dataset,
            "probe": cell.probe or "none",
            "backbone": cell.backbone,
            "backbone.plugin": meta.get("plugin"),
            "framework": meta.get("framework"),
            "folds": meta.get("folds"),
            "dataset.plugin": dmeta.get("plugin"),
            "data.images": dmeta.get("images"),
            "data.patients": dmeta.get("patients"),
            "data.classes": ",".join(dmeta.get("classes") or []),
            "data.positive_class": dmeta.get("positive_class"),
        }
    )
    out.update({f"backbone.{k}": v for k, v in (meta.get("options") or {}).items()})
    out.update({f"dataset.{k}": v for k, v in (dmeta.get("options") or {}).items()})
    if meta.get("external"):
        out["external"] = ",".join(meta["external"])
    return out


def run_tags(run_dir: Path, manifest: dict, key: str) -> dict:
    """Provenance of the parent run: which run directory, suite content, versions and hardware."""
    env = manifest.get("environment") or {}
    tags = {
        "benchbox.run_key": key,
        "benchbox.run_dir": str(Path(run_dir).resolve()),
        "benchbox.define.suite": manifest.get("suite"),
        "benchbox.suite_digest": manifest.get("suite_digest"),
        "benchbox.suite_path": manifest.get("suite_path"),
        "benchbox.format": manifest.get("format"),
        "benchbox.started_at": manifest.get("started_at"),
        "benchbox.status": manifest.get("status"),
        "benchbox.protocol": manifest.get("protocol_label"),
        "benchbox.timing": manifest.get("timing"),
        "benchbox.version": env.get("benchbox"),
        "env.python": env.get("python"),
        "env.os": env.get("os"),
        "env.machine": env.get("machine"),
        "env.cpu": env.get("cpu"),
        "env.cpu_count": env.get("cpu_count"),
        "env.gpus": ", ".join(env.get("gpus") or []) or "none",
    }
    tags.update({f"env.{name}": version for name, version in (env.get("packages") or {}).items()})
    description = (manifest.get("suite_as_run") or {}).get("description")
    tags["mlflow.note.content"] = (
        f"benchbox run `{Path(run_dir).resolve()}` of suite **{manifest.get('suite')}** "
        f"({manifest.get('protocol_label')}, digest {manifest.get('suite_digest')})."
        + (f"\n\n{description}" if description else "")
        + "\n\nOne child run per cell; per-fold metrics are `fold/*` (step = fold), the pooled "
        "metrics and their 95% intervals are logged at step = number of folds pooled."
    )
    return {k: v for k, v in tags.items() if v is not None}


class Mirror:
    """One benchbox run directory's parent MLflow run and its children, opened on one server."""

    def __init__(self, client, uri: str, experiment: str, experiment_id: str, run_dir: Path, manifest: dict):
        self.client = client
        self.uri = uri
        self.experiment = experiment
        self.experiment_id = experiment_id
        self.run_dir = Path(run_dir)
        self.manifest = manifest
        self.key = run_key(run_dir, manifest)
        self.cells = cell_index(manifest)
        self.parent_id = ""
        self.children: dict[CellKey, str] = {}
        self._steps: dict[str, dict[str, set[int]]] = {}  # run id -> metric -> steps already logged
        self.logged = 0  # metric values logged by this mirror (0 when everything was there)

    # --- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, run_dir, manifest: dict, config: dict) -> Mirror:
        """Connect, find or create the experiment, the parent run and a child per cell."""
        _, client_class = import_mlflow()
        uri = resolve_uri(config.get("uri"))
        probe(uri)
        client = client_class(tracking_uri=uri)
        name = config.get("experiment") or manifest.get("suite") or "benchbox"
        experiment_id = _experiment(client, name, config.get("artifact_location"), uri)
        mirror = cls(client, uri, name, experiment_id, Path(run_dir), manifest)
        mirror._open_parent()
        mirror._open_children()
        mirror.save_state()
        return mirror

    def _open_parent(self) -> None:
        state = read_state(self.run_dir).get("servers", {}).get(self.uri) or {}
        run = None
        if state.get("parent_run_id"):
            run = self._get_run(state["parent_run_id"])
            if run is not None and (
                run.info.experiment_id != self.experiment_id
                or run.data.tags.get("benchbox.suite_digest") != self.manifest.get("suite_digest")
            ):
                run = None  # another experiment now (--experiment), or not this run's content
        if run is None:
            found = self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.`benchbox.run_key` = '{self.key}'", max_results=1
            )
            run = found[0] if found else None
        if run is None:
            run = self.client.create_run(
                self.experiment_id,
                start_time=millis(self.manifest.get("started_at")),
                tags={"benchbox.run_key": self.key},
                run_name=self.run_dir.resolve().name,
            )
        self.parent_id = run.info.run_id

    def _open_children(self) -> None:
        found = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{self.parent_id}'", max_results=5000
        )
        by_slug = {r.data.tags.get("benchbox.cell_slug"): r.info.run_id for r in found}
        for cell in self.cells:
            if cell.slug in by_slug:
                self.children[cell] = by_slug[cell.slug]
        for cell in self.cells:
            self.child(cell)

    def child(self, cell: CellKey) -> str:
        """The child run of a cell (created when missing)."""
        if cell not in self.children:
            run = self.client.create_run(
                self.experiment_id,
                start_time=millis(self.manifest.get("started_at")),
                tags={
                    "mlflow.parentRunId": self.parent_id,
                    "benchbox.cell_slug": cell.slug,
                    "benchbox.cell": str(cell),
                    "benchbox.run_dir": str(self.run_dir.resolve()),
                },
                run_name=str(cell),
            )
            self.children[cell] = run.info.run_id
            self._steps[run.info.run_id] = {}
        return self.children[cell]

    def _get_run(self, run_id: str):
        try:
            run = self.client.get_run(run_id)
        except Exception as exc:  # not found on this server (deleted for good, or another store)
            if "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or "not found" in str(exc).lower():
                return None
            raise
        return run if run.info.lifecycle_stage == "active" else None

    def save_state(self) -> None:
        """Write RUN_DIR/mlflow.json atomically: where this run is mirrored."""
        state = read_state(self.run_dir)
        state["format"] = STATE_FORMAT
        state["last_uri"] = self.uri
        state["servers"][self.uri] = {
            "experiment": self.experiment,
            "experiment_id": self.experiment_id,
            "parent_run_id": self.parent_id,
            "children": {cell.slug: run_id for cell, run_id in self.children.items()},
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        write_json(self.run_dir / STATE_FILE, state)

    # --- the run's lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        """Params and tags of the parent and children, status RUNNING, and every fold already
        stored (a resumed run, or a run whose tracking failed earlier, is completed here)."""
        self._params_and_tags(
            self.parent_id, run_params(self.manifest), run_tags(self.run_dir, self.manifest, self.key)
        )
        for cell, run_id in self.children.items():
            meta = self.cells.get(cell, {})
            tags = {"benchbox.plugin": meta.get("plugin"), "benchbox.framework": meta.get("framework")}
            self._params_and_tags(run_id, cell_params(self.manifest, cell, meta), tags)
        for run_id in (self.parent_id, *self.children.values()):
            self.client.update_run(run_id, status="RUNNING")
        records, _ = RunStore(self.run_dir).read_records(self.manifest)
        for record in records:
            self.fold(record)

    def fold(self, record: FoldRecord) -> None:
        """A fold's metrics on its cell's child, at step = fold (skipped where already logged). A
        cross-dataset refit model is not a fold: its own "test" images are training images."""
        if record.refit:
            return
        values = {FOLD + k: v for k, v in fold_metrics(record).items()}
        self._log(self.child(record.cell), {record.fold: values}, millis(record.written_at))

    def end(self, result) -> None:
        """Summary metrics with intervals, the evaluators' per-fold values, artefacts, statuses.

        End times are the run's own (its last fold, the session's end in the manifest), not the
        time of an export."""
        cells = result.cells if result is not None else {}
        if result is not None:
            for _, row in result.summary.iterrows():
                self._cell_summary(row, cells.get(row["cell"], []), result.metrics)
            self._artifacts()
        failed = {
            CellKey(f.get("dataset", ""), f.get("backbone", ""), f.get("probe") or "")
            for f in (result.failures if result is not None else RunStore(self.run_dir).read_failures())
        }
        manifest = result.manifest if result is not None else self.manifest
        last = {cell: max(millis(r.written_at) for r in recs) for cell, recs in cells.items() if recs}
        ends = [*last.values(), *([millis(manifest["finished_at"])] if manifest.get("finished_at") else [])]
        parent_end = max(ends) if ends else millis(None)
        statuses = []
        for cell, run_id in self.children.items():
            expected = self.cells.get(cell, {}).get("folds")
            n = len(cells.get(cell, []))
            status = "FINISHED" if expected and n >= expected else "FAILED" if cell in failed else "KILLED"
            statuses.append(status)
            self._params_and_tags(run_id, {}, {"benchbox.folds_done": f"{n}/{expected}"})
            self.client.set_terminated(run_id, status, end_time=last.get(cell, parent_end))
        status = (
            "FINISHED" if all(s == "FINISHED" for s in statuses) else "FAILED" if "FAILED" in statuses else "KILLED"
        )
        folds = sum(len(recs) for recs in cells.values())
        self._params_and_tags(
            self.parent_id, {}, {**run_tags(self.run_dir, manifest, self.key), "benchbox.folds_done": folds}
        )
        self.client.set_terminated(self.parent_id, status, end_time=parent_end)
        self.save_state()

    def _cell_summary(self, row, records: list[FoldRecord], metrics) -> None:
        run_id = self.child(row["cell"])
        n = int(row.get("folds") or len(records))
        values = {}
        for spec in metrics:
            for suffix in ("", "_ci_low", "_ci_high", "_fold_std"):
                value = _number(row.get(spec.name + suffix))
                if value is not None:
                    values[spec.name + suffix] = value
        for name in ("train_seconds", "infer_images_per_sec", "folds", "vs_best_p"):
            value = _number(row.get(name))
            if value is not None:
                values[name] = value
        self._log(run_id, {n: values}, int(time.time() * 1000))
        # the evaluators' own per-fold values (NAME_folds, one per record in fold order)
        per_fold: dict[int, dict] = {}
        for spec in metrics:
            listed = row.get(f"{spec.name}_folds")
            if isinstance(listed, (list, tuple)) and len(listed) == len(records):
                for record, value in zip(records, listed):
                    if _number(value) is not None:
                        per_fold.setdefault(record.fold, {})[FOLD + spec.name] = _number(value)
        for fold, fold_values in per_fold.items():
            stamp = next((r.written_at for r in records if r.fold == fold), None)
            self._log(run_id, {fold: fold_values}, millis(stamp))
        if isinstance(row.get("vs_best"), str):
            self._params_and_tags(run_id, {}, {"benchbox.vs_best": row["vs_best"]})

    def _artifacts(self) -> None:
        for name in REPORT_FILES:
            path = self.run_dir / name
            if path.is_file():
                self.client.log_artifact(self.parent_id, str(path))
        for path in sorted(self.run_dir.glob("*.csv")):  # report sections written as CSV files
            if path.name not in REPORT_FILES:
                self.client.log_artifact(self.parent_id, str(path))
        for path in sorted((self.run_dir / "plots").glob("*.png")):
            self.client.log_artifact(self.parent_id, str(path), "plots")

    # --- logging, without duplicates ---------------------------------------------------------
    def steps(self, run_id: str) -> dict[str, set[int]]:
        """Metric -> steps already logged on a run (read once per run, then kept up to date)."""
        if run_id not in self._steps:
            keys = self.client.get_run(run_id).data.metrics
            self._steps[run_id] = {k: {m.step for m in self.client.get_metric_history(run_id, k)} for k in keys}
        return self._steps[run_id]

    def _log(self, run_id: str, by_step: dict[int, dict[str, float]], timestamp: int) -> None:
        from mlflow.entities import Metric

        have = self.steps(run_id)
        batch = [
            Metric(_key(k), float(v), timestamp, int(step))
            for step, values in by_step.items()
            for k, v in values.items()
            if int(step) not in have.get(_key(k), ())
        ]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(run_id, metrics=batch[i : i + 1000])
        for m in batch:
            have.setdefault(m.key, set()).add(m.step)
        self.logged += len(batch)

    def _params_and_tags(self, run_id: str, params: dict, tags: dict) -> None:
        from mlflow.entities import Param, RunTag

        existing = self.client.get_run(run_id).data.params if params else {}
        new_params = [
            Param(_key(k), _text(v, MAX_PARAM)) for k, v in params.items() if v is not None and _key(k) not in existing
        ]
        new_tags = [RunTag(_key(k), _text(v, MAX_TAG)) for k, v in tags.items() if v is not None]
        for i in range(0, len(new_params), BATCH):
            self.client.log_batch(run_id, params=new_params[i : i + BATCH])
        for i in range(0, len(new_tags), BATCH):
            self.client.log_batch(run_id, tags=new_tags[i : i + BATCH])


def _experiment(client, name: str, artifact_location: str | None, uri: str) -> str:
    """The id of the experiment called ``name`` (created when missing)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        if artifact_location and "://" not in artifact_location:
            artifact_location = Path(artifact_location).expanduser().resolve().as_uri()
        try:
            return client.create_experiment(name, artifact_location=artifact_location)
        except Exception:
            experiment = client.get_experiment_by_name(name)  # created meanwhile by another process
            if experiment is None:
                raise
    if experiment.lifecycle_stage != "active":
        raise BenchboxError(
            f"mlflow: experiment {name!r} at {uri} is deleted; restore it (`mlflow experiments restore "
            f"--experiment-id {experiment.experiment_id}`) or name another experiment"
        )
    return experiment.experiment_id
