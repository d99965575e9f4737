"""The fixed cost of a fold, before and after "no per-fold rebuild", side by side in one run.

A fold's fixed cost is its wall time (the harness's ``fit`` + test-fold ``predict``, device
synchronised) minus the time inside its training and prediction steps (the engine's
``train_loop_seconds`` and ``predict_loop_seconds`` in the fold's info). It is what every fold
pays whatever the data: building the network (or resetting it), tracing, splitting off the frozen
prefix, moving data, plus the frozen prefix's forward pass over the fold's images when its
activations are not cached yet (shown apart, as "prefix").

The suite's folds run through the harness (``benchbox.execute.harness.run_fold``, as ``benchbox run`` does)
twice per engine: with ``BENCHBOX_REBUILD_EACH_FOLD=1`` (every fold builds its model: "before")
and without it (a cell's model is built once and reset for each fold: "after"). The prefix cache
and the engine's model cache are emptied before each pass, and one untimed fold warms the process
up first. An engine whose module has no ``rebuild_each_fold`` switch is skipped with a line saying so.

    python benchmarks/fold_overhead.py                               # suites/quickstart.toml, both engines
    python benchmarks/fold_overhead.py --engines torch --epochs 2   # quicker
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWITCH = "BENCHBOX_REBUILD_EACH_FOLD"


def engine_module(framework: str):
    """The engine's module, or None when the framework is not installed."""
    if framework == "torch":
        import torch  # noqa: F401  (torch before keras/TensorFlow: the other order segfaults in some venvs)
    try:
        return importlib.import_module(f"benchbox_{framework}.engine")
    except ImportError:
        return None


def framework_of(plugin: str) -> str:
    return "keras" if plugin.split("/")[0] == "keras" else "torch"  # torch/, timm/, txv/: the PyTorch engine


def only_engines(path, engines) -> dict:
    """The suite's TOML without the backbones of engines not asked for (they need not be installed)."""
    import tomllib

    raw = tomllib.loads(Path(path).read_text())
    raw["backbones"] = {a: b for a, b in raw.get("backbones", {}).items() if framework_of(b["plugin"]) in engines}
    return raw


def run_pass(engine, units, images, registry, rebuild: bool) -> list[dict]:
    from benchbox.execute.executors import build_job
    from benchbox.execute.harness import run_fold
    from benchbox_engine_common.prefix_cache import CACHE

    CACHE.clear()
    if hasattr(engine, "MODELS"):
        engine.MODELS.clear()
    if rebuild:
        os.environ[SWITCH] = "1"
    else:
        os.environ.pop(SWITCH, None)
    rows = []
    try:
        for unit in units:
            backbone = registry.get("backbone", unit.plugin)
            job = build_job(unit, images[unit.images_key], images[unit.test_images_key])
            t0 = time.perf_counter()
            out = run_fold(backbone, unit.plugin, job, unit.where)
            elapsed = time.perf_counter() - t0
            info = out.info
            wall = out.train_seconds + out.predict_seconds
            steps = info.get("train_loop_seconds", 0.0) + info.get("predict_loop_seconds", 0.0)
            prefix = info.get("prefix_seconds", 0.0) if info.get("prefix_cache") == "computed" else 0.0
            rows.append(
                {
                    "fold": unit.fold,
                    "wall": wall,
                    "steps": steps,
                    "fixed": wall - steps,
                    "prefix": prefix,
                    "model": info.get("model", "?"),
                    "cache": str(info.get("prefix_cache", "-")).split(":")[0],
                    "harness_total": elapsed,
                    "has_predict_steps": "predict_loop_seconds" in info,
                }
            )
    finally:
        os.environ.pop(SWITCH, None)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", default=str(ROOT / "suites" / "quickstart.toml"))
    ap.add_argument("--engines", default="torch,keras", help="comma-separated: torch, keras")
    ap.add_argument(
        "--epochs", type=int, default=None, help="override the suite's epochs (fixed cost does not depend on it)"
    )
    ap.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"), help="override training.device")
    ap.add_argument("--precision", default=None, choices=("fp32", "mixed"), help="override training.precision")
    args = ap.parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    modules = {e: engine_module(e) for e in ("torch", "keras") if e in engines}  # torch first

    from benchbox.define.plan import load_images, plan_units, prepare_data
    from benchbox.define.suite import validate_suite
    from benchbox.errors import BenchboxError
    from benchbox.plugins import load_registry

    registry = load_registry()
    results, said = [], False
    for framework in engines:
        engine = modules.get(framework)
        if engine is None:
            print(f"{framework}: skipped: benchbox_{framework} (or its framework) is not installed", flush=True)
            continue
        # the switch lives in the engine skeleton (benchbox_engine_common.fold_engine) since both engines share it
        if not (hasattr(engine, "ENGINE") or hasattr(engine, "rebuild_each_fold")):
            print(
                f"{framework}: skipped: the {framework} engine has no {SWITCH} switch "
                f"(benchbox_{framework}.engine.rebuild_each_fold is missing), so there is no before/after to compare",
                flush=True,
            )
            continue
        try:  # this engine's backbones only: the other engine need not be installed or usable here
            suite = validate_suite(only_engines(args.suite, [framework]), Path(args.suite), registry)
        except BenchboxError as exc:
            print(f"{framework}: skipped: the suite's {framework} backbones cannot run here: {exc}", flush=True)
            continue
        if not suite.cells:
            print(f"{framework}: skipped: the suite has no {framework} backbone", flush=True)
            continue
        training = suite.training
        for key, value in (("epochs", args.epochs), ("device", args.device), ("precision", args.precision)):
            if value is not None:
                training = replace(training, **{key: value})
        suite = replace(suite, training=training)
        data = prepare_data(suite, registry)
        mine = plan_units(suite, data, lambda cell, fold: False)
        for u in mine:  # the same FoldJobs as `benchbox run` builds (benchbox.execute.executors.build_job)
            u.job_fields = {**u.job_fields, "training": training}
        images, _ = load_images(mine, data)
        if not said:
            print(
                f"fold_overhead: {Path(args.suite).name}, {os.cpu_count()} CPU(s) seen, torch threads "
                f"{_torch_threads()}, epochs {training.epochs}, batch {training.batch_size}, "
                f"device {training.device}, precision {training.precision}",
                flush=True,
            )
            said = True
        mine = [u for u in mine if u.cell == mine[0].cell]  # one cell: its folds
        run_pass(engine, mine[:1], images, registry, rebuild=True)  # warm-up: imports, first kernels
        before = run_pass(engine, mine, images, registry, rebuild=True)
        after = run_pass(engine, mine, images, registry, rebuild=False)
        results.append((framework, mine[0].plugin, before, after))
        print(f"\n{framework} ({mine[0].plugin}), seconds per fold:", flush=True)
        print(f"{'fold':>4}  {'':6} {'wall':>7} {'steps':>7} {'fixed':>7} {'prefix':>7}  model  prefix cache")
        for b, a in zip(before, after):
            for label, r in (("before", b), ("after", a)):
                print(
                    f"{r['fold']:>4}  {label:6} {r['wall']:7.3f} {r['steps']:7.3f} {r['fixed']:7.3f} "
                    f"{r['prefix']:7.3f}  {r['model']:6} {r['cache']}"
                )
        if not all(r["has_predict_steps"] for r in before + after):
            print("  (the engine records no predict_loop_seconds: prediction counts as fixed cost)")
    if results:
        print("\nmean fixed cost per fold (wall - training and prediction steps), seconds:")
        print(f"{'engine':8} {'backbone':22} {'before':>8} {'after':>8} {'saved':>8}   of which prefix before/after")
        for framework, plugin, before, after in results:
            fb = statistics.mean(r["fixed"] for r in before)
            fa = statistics.mean(r["fixed"] for r in after)
            pb = statistics.mean(r["prefix"] for r in before)
            pa = statistics.mean(r["prefix"] for r in after)
            print(f"{framework:8} {plugin:22} {fb:8.3f} {fa:8.3f} {fb - fa:8.3f}   {pb:.3f} / {pa:.3f}")
    return 0


def _torch_threads() -> str:
    if "torch" not in sys.modules:
        return "-"
    return str(sys.modules["torch"].get_num_threads())


if __name__ == "__main__":
    sys.exit(main())
