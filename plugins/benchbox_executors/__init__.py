"""The first-party executors: ``local`` (this process) and ``ray`` (a Ray cluster or local instance).

Both go through the same harness (``benchbox.execute.harness.run_fold``), so timings and output checks are
identical, and the driver writes every record to the run store as units finish, so the run
directory, resuming and reports are the same whichever executor ran it.
"""

from __future__ import annotations

import os
import traceback

import numpy as np

from benchbox import hookimpl
from benchbox.contracts import Availability, Executor
from benchbox.define.plan import Unit
from benchbox.errors import BenchboxError
from benchbox.execute.environment import THREAD_VARIABLES
from benchbox.execute.executors import build_job
from benchbox.execute.harness import FoldOutcome, run_fold

RAY_INSTALL = "pip install 'benchbox[ray]'"
#: where the frozen schemes' embedding cache is and how it behaves (benchbox/execute/embeddings.py)
CACHE_VARIABLES = ("BENCHBOX_CACHE", "BENCHBOX_EMBED_CACHE", "BENCHBOX_EMBED_CACHE_LIMIT")


class Local(Executor):
    """Units one after another in this process. After a unit of a cell fails, the cell's other
    units are skipped (the same plugin would most likely fail again); the next run retries them."""

    name = "local"
    description = "one fold after another in this process"

    def run(self, units, images, externals, on_done, on_failed, reporter, options, registry) -> None:
        failed_cells = set()
        for unit in units:
            if unit.cell in failed_cells:
                on_failed(unit, "skipped: an earlier fold of this cell failed in this session", None)
                continue
            label = "refit on all of it" if unit.refit else unit.fold  # a cross-dataset refit is not a fold
            reporter.fold_start(unit.cell, label, unit.job_fields["training"].epochs)
            backbone = registry.get("backbone", unit.plugin)
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


class Ray(Executor):
    """Each unit a Ray task (resources per fold, bounded retries) on a cluster or a local instance."""

    name = "ray"
    description = "each fold a Ray task on a cluster (address, RAY_ADDRESS) or a local Ray instance"
    #: "" address: RAY_ADDRESS, else a local instance; 0 memory: no request; 0 local_cpus: every core
    defaults = {
        "address": "",
        "cpus_per_fold": 1.0,
        "gpus_per_fold": 0.0,
        "memory_gb_per_fold": 0.0,
        "max_retries": 2,
        "local_cpus": 0,
    }

    def availability(self) -> Availability:
        return Availability.needs_modules("ray", install=RAY_INSTALL)

    def check_options(self, options) -> list[str]:
        return [
            f"{key}: must not be negative, got {options[key]}"
            for key in ("cpus_per_fold", "gpus_per_fold", "memory_gb_per_fold", "max_retries", "local_cpus")
            if isinstance(options.get(key), (int, float)) and options[key] < 0
        ]

    def label(self, options) -> str:
        return f"ray ({options.get('address') or os.environ.get('RAY_ADDRESS') or 'local instance'})"

    def _ray(self):
        try:
            import ray
        except ImportError:
            raise BenchboxError(f"the Ray executor needs Ray, which is not installed: {RAY_INSTALL}") from None
        return ray

    def _connect(self, ray, options):
        if ray.is_initialized():
            return
        address = options.get("address") or os.environ.get("RAY_ADDRESS")
        kwargs = {
            "include_dashboard": False,
            "log_to_driver": False,
            "ignore_reinit_error": True,
            # workers must import benchbox and the plugins exactly as the driver does, use the thread
            # pools --threads chose, and the driver's embedding cache (the frozen schemes' features: on a
            # cluster, BENCHBOX_CACHE on a shared file system gives every node the same cache)
            "runtime_env": {
                "env_vars": {
                    "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
                    **{name: os.environ[name] for name in (*THREAD_VARIABLES, *CACHE_VARIABLES) if name in os.environ},
                    # a linear probe's inner splits: as many processes as CPUs a fold asks for, not the driver's
                    "BENCHBOX_PROBE_PROCESSES": str(max(1, int(float(options.get("cpus_per_fold") or 1)))),
                }
            },
        }
        try:
            if address:
                ray.init(address=address, **kwargs)
            else:
                # a local instance of its own: without address="local", ray.init joins whatever cluster a
                # `ray start --head` on this machine left running (another user's, another session's)
                ray.init(address="local", num_cpus=options.get("local_cpus") or None, **kwargs)
        except Exception as exc:
            raise BenchboxError(
                f"cannot start or reach Ray ({address or 'local instance'}): {exc}. Check "
                "--ray-address / RAY_ADDRESS, or start a cluster with `ray start --head`"
            ) from None

    def run(self, units, images, externals, on_done, on_failed, reporter, options, registry) -> None:
        ray = self._ray()
        self._connect(ray, options)
        cfg = {**self.defaults, **options}
        resources = {
            "num_cpus": cfg["cpus_per_fold"],
            "num_gpus": cfg["gpus_per_fold"],
            "max_retries": cfg["max_retries"],
            # a fold can fail for a passing reason on a cluster (out of GPU memory, a lost node)
            "retry_exceptions": True,
        }
        if cfg["memory_gb_per_fold"]:
            resources["memory"] = int(cfg["memory_gb_per_fold"] * 2**30)
        task = ray.remote(_ray_train_unit).options(**resources)
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
            f"ray: {total} unit(s) submitted ({cfg['cpus_per_fold']} CPU, {cfg['gpus_per_fold']} GPU per fold, "
            f"up to {cfg['max_retries']} retries)"
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


@hookimpl
def benchbox_executors():
    return [Local(), Ray()]
