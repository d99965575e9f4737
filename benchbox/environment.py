"""What a run ran on: versions, OS, CPU and GPU, without importing any framework."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import shutil
import subprocess

FRAMEWORK_PACKAGES = (
    "keras",
    "tensorflow",
    "tensorflow-cpu",
    "torch",
    "torchvision",
    "timm",
    "jax",
    "jaxlib",
    "numpy",
    "scikit-learn",
    "pluggy",
)


def package_versions() -> dict[str, str]:
    out = {}
    for name in FRAMEWORK_PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_names() -> list[str]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
        return [line.strip() for line in out.stdout.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        return []


def environment() -> dict:
    from benchbox import __version__

    return {
        "benchbox": __version__,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpus": gpu_names(),
        "load_average": load_average(),
        "packages": package_versions(),
        "settings": settings(),
    }


#: the frameworks' thread pools (PyTorch and NumPy read OMP_NUM_THREADS and MKL_NUM_THREADS, TensorFlow
#: the TF_ pair) when they are imported
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
#: environment variables that change what the frameworks compute, or how fast, recorded when set
RECORDED_VARIABLES = ("KERAS_BACKEND", "BENCHBOX_REBUILD_EACH_FOLD", "CUDA_VISIBLE_DEVICES", *THREAD_VARIABLES)


def set_threads(n: int) -> None:
    """``--threads N``: every framework's pool of intra-op threads (TensorFlow's inter-op pool: one).
    Must run before a framework is imported: they read these variables once."""
    for name in THREAD_VARIABLES:
        os.environ[name] = "1" if name == "TF_NUM_INTEROP_THREADS" else str(n)


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none): a busy machine explains slow timings."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def busy(load: float | None, cores: int, threads_set: bool) -> bool:
    """Default thread pools on a machine whose load average is at least half its cores (and at least 1)."""
    return load is not None and not threads_set and load >= max(1.0, 0.5 * cores)


def busy_note() -> str | None:
    """A note for a run about to time folds on a machine other jobs keep busy, with default thread pools.
    Measured on 2 cores beside one busy process: PyTorch with 2 threads 127 ms per MobileNet v2 batch,
    with 1 thread 18.5 ms (benchmarks/busy_threads.py; docs/performance.md, "Busy machines")."""
    load, cores = load_average(), os.cpu_count() or 1
    if not busy(load, cores, any(name in os.environ for name in THREAD_VARIABLES)):
        return None
    return (
        f"note: this machine is busy (load average {load:g} over the last minute, {cores} cores): framework "
        "threads waiting for busy cores can make folds 10-100x slower and their timings meaningless; "
        "--threads 1 (or fewer than the free cores) avoids that"
    )


def settings() -> dict[str, str]:
    return {name: os.environ[name] for name in RECORDED_VARIABLES if name in os.environ}
