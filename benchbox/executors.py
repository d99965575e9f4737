"""Executors: who trains the units of work (cell x fold) of a run.

``local`` trains them one after another in this process. ``ray`` submits each unit as a Ray
task (resources per fold, bounded retries) to a Ray cluster or a local Ray instance. Both go
through the same harness (benchbox/harness.py), so timings and output checks are identical, and
the driver writes every record to the run store as units finish, so the run directory, resuming
and reports are the same whichever executor ran it.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass

import numpy as np

from benchbox.contracts import FoldJob
from benchbox.environment import THREAD_VARIABLES
from benchbox.errors import BenchboxError, PluginError
from benchbox.harness import FoldOutcome, run_fold
from benchbox.plan import Unit

RAY_INSTALL = "pip install 'benchbox[ray]'"


@dataclass
class ExecutorConfig:
    kind: str = "local"  # "local" | "ray"
    address: str | None = None  # Ray cluster; None: RAY_ADDRESS, else a local instance
    cpus_per_fold: float = 1.0
    gpus_per_fold: float = 0.0
    memory_gb_per_fold: float | None = None
    max_retries: int = 2
    local_cpus: int | None = None  # size of a local Ray instance (default: all cores)

    @property
    def label(self) -> str:
        if self.kind == "local":
            return self.kind
        return f"ray ({self.address or os.environ.get('RAY_ADDRESS') or 'local instance'})"


def build_job(unit: Unit, images: np.ndarray, test_images: np.ndarray, progress=None) -> FoldJob:
    f = unit.job_fields
    return FoldJob(
        x_train=images[unit.train_idx],
        y_train=f["y_train"],
        x_test=test_images[unit.test_idx],
        num_classes=f["num_classes"],
        options=f["options"],
        training=f["training"],
        seed=f["seed"],
        progress=progress,
        train_ids=f["train_ids"],
        test_ids=f["test_ids"],
        explain=f.get("explain"),
    )


class LocalExecutor:
    """Units one after another in this process. After a unit of a cell fails, the cell's other
    units are skipped (the same plugin would most likely fail again); the next run retries them."""

    def __init__(self, config: ExecutorConfig, registry):
        self.config, self.registry = config, registry

    def run(self, units, images: dict, externals: dict, on_done, on_failed, reporter) -> None:
        failed_cells = set()
        for unit in units:
            if unit.cell in failed_cells:
                on_failed(unit, "skipped: an earlier fold of this cell failed in this session", None)
                continue
            label = "refit on all of it" if unit.refit else unit.fold  # a cross-dataset refit is not a fold
            reporter.fold_start(unit.cell, label, unit.job_fields["training"].epochs)
            backbone = self.registry.get("backbone", unit.plugin)
            job = build_job(unit, images[unit.images_key], images[unit.test_images_key], reporter.epoch)
            try:
                outcome = run_fold(backbone, unit.plugin, job, unit.where, externals.get(unit.external_key, {}))
            except BenchboxError as exc:
                failed_cells.add(unit.cell)
                on_failed(unit, str(exc), getattr(exc, "detail", None))
                continue
            on_done(unit, outcome)


def _ray_train_unit(unit: Unit, images: np.ndarray, test_images: np.ndarray, externals: dict) -> FoldOutcome:
    """Runs on a Ray worker: the plugin comes from the worker's own installed entry points."""
    from benchbox.plugins import load_registry

    backbone = load_registry().get("backbone", unit.plugin)
    return run_fold(backbone, unit.plugin, build_job(unit, images, test_images), unit.where, externals)


class RayExecutor:
    def __init__(self, config: ExecutorConfig, registry):
        try:
            import ray
        except ImportError:
            raise BenchboxError(f"the Ray executor needs Ray, which is not installed: {RAY_INSTALL}") from None
        self.ray, self.config, self.registry = ray, config, registry

    def _connect(self):
        ray = self.ray
        if ray.is_initialized():
            return
        address = self.config.address or os.environ.get("RAY_ADDRESS")
        kwargs = {
            "include_dashboard": False,
            "log_to_driver": False,
            "ignore_reinit_error": True,
            # workers must import benchbox and the plugins exactly as the driver does
            # (and use the thread pools --threads chose)
            "runtime_env": {
                "env_vars": {
                    "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
                    **{name: os.environ[name] for name in THREAD_VARIABLES if name in os.environ},
                }
            },
        }
        try:
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=self.config.local_cpus, **kwargs)
        except Exception as exc:
            raise BenchboxError(
                f"cannot start or reach Ray ({address or 'local instance'}): {exc}. Check "
                "--ray-address / RAY_ADDRESS, or start a cluster with `ray start --head`"
            ) from None

    def run(self, units, images: dict, externals: dict, on_done, on_failed, reporter) -> None:
        self._connect()
        ray, cfg = self.ray, self.config
        options = {
            "num_cpus": cfg.cpus_per_fold,
            "num_gpus": cfg.gpus_per_fold,
            "max_retries": cfg.max_retries,
            # a fold can fail for a passing reason on a cluster (out of GPU memory, a lost node)
            "retry_exceptions": True,
        }
        if cfg.memory_gb_per_fold:
            options["memory"] = int(cfg.memory_gb_per_fold * 2**30)
        task = ray.remote(_ray_train_unit).options(**options)
        # each image array goes to the object store once and is shared by every task that reads it
        image_refs = {key: ray.put(arr) for key, arr in images.items()}
        external_refs = {key: ray.put(ext) for key, ext in externals.items()}
        pending = {
            task.remote(
                u, image_refs[u.images_key], image_refs[u.test_images_key], external_refs.get(u.external_key, {})
            ): u
            for u in units
        }
        total = len(pending)
        reporter.message(
            f"ray: {total} unit(s) submitted ({cfg.cpus_per_fold} CPU, {cfg.gpus_per_fold} GPU per fold, "
            f"up to {cfg.max_retries} retries)"
        )
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            unit = pending.pop(ref)
            try:
                out = ray.get(ref)
            except Exception as exc:  # retries are exhausted: record and go on with the others
                cause = getattr(exc, "cause", None) or exc
                message = str(cause) if isinstance(cause, BenchboxError) else _error_text(cause)
                on_failed(unit, message, getattr(cause, "detail", None) or str(exc))
            else:
                on_done(unit, out)
            reporter.message(f"ray: {total - len(pending)} finished, {len(pending)} running or pending")


def _error_text(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return text[-2000:]


def make_executor(config: ExecutorConfig, registry):
    if config.kind == "local":
        return LocalExecutor(config, registry)
    if config.kind == "ray":
        return RayExecutor(config, registry)
    raise PluginError(f"unknown executor {config.kind!r}; choose local or ray")
