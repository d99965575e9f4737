"""Throughput measurement in the manner of timm's benchmark.py: warm-up steps excluded, device
synchronised before every clock read, enough measured steps for a stable figure, latency
percentiles and samples/s per batch size. Engines supply the steps; this module only times."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable

import numpy as np

from benchbox.contracts import Steps
from benchbox.execute.environment import cpu_name, gpu_names, package_versions

CSV_COLUMNS = [
    "model",
    "framework",
    "device",
    "infer_samples_per_sec",
    "infer_step_time",
    "infer_step_time_p5",
    "infer_step_time_p95",
    "infer_batch_size",
    "infer_img_size",
    "param_count",
    "gmacs",
    "train_samples_per_sec",
    "train_step_time",
    "train_batch_size",
    "amp",
    "channels_last",
    "infer_steps",
    "train_steps",
    "hardware",
    "versions",
]


def measure(
    steps: Steps,
    batch_size: int,
    clock: Callable[[], float] = time.perf_counter,
    warmup: int = 3,
    min_steps: int = 5,
    min_seconds: float = 2.0,
    max_steps: int = 500,
) -> dict:
    """Time ``steps.step`` after ``warmup`` untimed steps until both min_steps and min_seconds are
    reached (the figure is then stable to a few percent on a quiet machine). Times in ms."""
    for _ in range(warmup):
        steps.step()
    latencies = []
    while len(latencies) < max_steps and (len(latencies) < min_steps or sum(latencies) < min_seconds):
        steps.sync()
        t0 = clock()
        steps.step()
        steps.sync()
        latencies.append(clock() - t0)
    lat = np.asarray(latencies)
    return {
        "samples_per_sec": batch_size * len(lat) / lat.sum(),
        "step_time": 1000 * float(np.median(lat)),
        "step_time_p5": 1000 * float(np.percentile(lat, 5)),
        "step_time_p95": 1000 * float(np.percentile(lat, 95)),
        "steps": len(lat),
    }


def bench_backbone(
    backbone, options: dict, batch_sizes, train_batch_size: int, device: str, amp: bool, channels_last: bool, **timing
) -> list[dict]:
    """One CSV row per inference batch size (training measured once, at the suite's batch size)."""
    h, w = options["input_size"]
    rows = []
    train = None
    if train_batch_size:
        model = backbone.bench_steps(options, train_batch_size, device, amp, channels_last, train=True)
        train = measure(model["steps"], train_batch_size, **timing)
    for bs in batch_sizes:
        model = backbone.bench_steps(options, bs, device, amp, channels_last, train=False)
        infer = measure(model["steps"], bs, **timing)
        versions = package_versions()
        rows.append(
            {
                "model": backbone.name,
                "framework": backbone.framework,
                "device": device,
                "infer_samples_per_sec": round(infer["samples_per_sec"], 2),
                "infer_step_time": round(infer["step_time"], 3),
                "infer_step_time_p5": round(infer["step_time_p5"], 3),
                "infer_step_time_p95": round(infer["step_time_p95"], 3),
                "infer_batch_size": bs,
                "infer_img_size": f"{h}x{w}",
                "param_count": round(model["params"] / 1e6, 3),
                "gmacs": model.get("gmacs"),
                "train_samples_per_sec": round(train["samples_per_sec"], 2) if train else None,
                "train_step_time": round(train["step_time"], 3) if train else None,
                "train_batch_size": train_batch_size or None,
                "amp": amp,
                "channels_last": channels_last,
                "infer_steps": infer["steps"],
                "train_steps": train["steps"] if train else None,
                "hardware": ", ".join(gpu_names()) if device == "cuda" else f"{cpu_name()} ({platform.machine()})",
                "versions": " ".join(
                    f"{k}={v}"
                    for k, v in versions.items()
                    if k in ("torch", "keras", "tensorflow", "tensorflow-cpu", "timm")
                ),
            }
        )
    return rows
