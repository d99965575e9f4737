"""Executors: who trains the units of work (dataset x backbone x fold) of a run.

``local`` trains them one after another in this process. ``ray`` submits each unit as a Ray
task (resources per fold, bounded retries) to a Ray cluster or a local Ray instance; the driver
writes every record to the run store as tasks finish, exactly as the local executor does, so the
run directory, resuming and reports are the same whichever executor ran it.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass

import numpy as np

from benchbox.contracts import FoldJob, FoldOutput
from benchbox.errors import BenchboxError

RAY_INSTALL = "pip install 'benchbox[ray]'"


@dataclass
class Unit:
    """One fold of one cell, with everything needed to build its FoldJob from shared arrays."""

    dataset: str
    backbone: str
    plugin: str
    fold: int
    images_key: tuple  # (dataset, input size): the shared image array
    test_images_key: tuple  # the array test images come from (differs for a test-only probe)
    train_idx: np.ndarray
    test_idx: np.ndarray
    job_fields: dict  # y_train, num_classes, options, training, seed, ids


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
        return self.kind if self.kind == "local" else f"ray ({self.address or os.environ.get('RAY_ADDRESS') or 'local instance'})"


def build_job(unit: Unit, images: np.ndarray, test_images: np.ndarray, externals: dict, progress=None) -> FoldJob:
    f = unit.job_fields
    return FoldJob(x_train=images[unit.train_idx], y_train=f["y_train"], x_test=test_images[unit.test_idx],
                   num_classes=f["num_classes"], options=f["options"], training=f["training"], seed=f["seed"],
                   progress=progress, train_ids=f["train_ids"], test_ids=f["test_ids"], x_external=externals)


class LocalExecutor:
    def __init__(self, config: ExecutorConfig, registry):
        self.config, self.registry = config, registry

    def run(self, units, images: dict, externals: dict, on_done, on_failed, reporter) -> None:
        for unit in units:
            reporter.fold_start(unit.dataset, unit.backbone, unit.fold, unit.job_fields["training"].epochs)
            backbone = self.registry.get("backbone", unit.plugin)
            job = build_job(unit, images[unit.images_key], images[unit.test_images_key],
                            externals.get(unit.images_key, {}), reporter.epoch)
            on_done(unit, backbone.fit_predict(job))


def _ray_train_unit(unit: Unit, images: np.ndarray, test_images: np.ndarray, externals: dict) -> FoldOutput:
    """Runs on a Ray worker: the plugin comes from the worker's own installed entry points."""
    from benchbox.plugins import load_registry

    backbone = load_registry().get("backbone", unit.plugin)
    return backbone.fit_predict(build_job(unit, images, test_images, externals))


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
        kwargs = {"include_dashboard": False, "log_to_driver": False, "ignore_reinit_error": True,
                  # workers must import benchbox and the plugins exactly as the driver does
                  "runtime_env": {"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}}}
        try:
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=self.config.local_cpus, **kwargs)
        except Exception as exc:
            raise BenchboxError(f"cannot start or reach Ray ({address or 'local instance'}): {exc}. Check "
                                "--ray-address / RAY_ADDRESS, or start a cluster with `ray start --head`") from None

    def run(self, units, images: dict, externals: dict, on_done, on_failed, reporter) -> None:
        ray = self._connect() or self.ray
        cfg = self.config
        options = {"num_cpus": cfg.cpus_per_fold, "num_gpus": cfg.gpus_per_fold, "max_retries": cfg.max_retries,
                   "retry_exceptions": True}
        if cfg.memory_gb_per_fold:
            options["memory"] = int(cfg.memory_gb_per_fold * 2**30)
        task = ray.remote(_ray_train_unit).options(**options)
        # each image array goes to the object store once and is shared by every task that reads it
        image_refs = {key: ray.put(arr) for key, arr in images.items()}
        external_refs = {key: ray.put(ext) for key, ext in externals.items()}
        pending = {task.remote(u, image_refs[u.images_key], image_refs[u.test_images_key],
                               external_refs.get(u.images_key, {})): u for u in units}
        total = len(pending)
        reporter.message(f"ray: {total} unit(s) submitted ({cfg.cpus_per_fold} CPU, {cfg.gpus_per_fold} GPU per fold, "
                         f"up to {cfg.max_retries} retries)")
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            unit = pending.pop(ref)
            try:
                out = ray.get(ref)
            except Exception as exc:  # retries are exhausted: record and go on with the others
                on_failed(unit, _error_text(exc))
            else:
                on_done(unit, out)
            reporter.message(f"ray: {total - len(pending)} finished, {len(pending)} running or pending")


def _error_text(exc: Exception) -> str:
    cause = getattr(exc, "cause", None) or exc
    text = "".join(traceback.format_exception_only(type(cause), cause)).strip()
    return text[-2000:]


def make_executor(config: ExecutorConfig, registry):
    if config.kind == "local":
        return LocalExecutor(config, registry)
    if config.kind == "ray":
        return RayExecutor(config, registry)
    raise BenchboxError(f"unknown executor {config.kind!r}; choose local or ray")
