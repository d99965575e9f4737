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
        "packages": package_versions(),
        "settings": settings(),
    }


#: environment variables that change what the frameworks compute, recorded when set
RECORDED_VARIABLES = ("KERAS_BACKEND", "BENCHBOX_REBUILD_EACH_FOLD", "CUDA_VISIBLE_DEVICES")


def settings() -> dict[str, str]:
    return {name: os.environ[name] for name in RECORDED_VARIABLES if name in os.environ}
