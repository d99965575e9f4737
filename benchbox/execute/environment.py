"""What a run ran on: versions, OS, CPU and GPU, without importing any framework."""

from __future__ import annotations

import importlib.metadata as md
import math
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

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


def package_versions(names=FRAMEWORK_PACKAGES) -> dict[str, str]:
    """The installed version of each of ``names`` (those installed)."""
    out = {}
    for name in names:
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
        **({"threads": dict(THREADS_CHOSEN)} if THREADS_CHOSEN else {}),
    }


#: the frameworks' thread pools (PyTorch and NumPy read OMP_NUM_THREADS and MKL_NUM_THREADS, TensorFlow
#: the TF_ pair) when they are imported
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
#: environment variables that change what the frameworks compute, or how fast, recorded when set
RECORDED_VARIABLES = ("KERAS_BACKEND", "BENCHBOX_REBUILD_EACH_FOLD", "CUDA_VISIBLE_DEVICES", *THREAD_VARIABLES)


#: how this process's thread pools were sized (--threads auto or N): recorded in the manifest's environment
THREADS_CHOSEN: dict = {}


def set_threads(n: int) -> None:
    """``--threads N``: every framework's pool of intra-op threads (TensorFlow's inter-op pool: one).

    Sets the variables the frameworks read once, when imported (so it must run before they are), and
    resizes the pools already loaded: BLAS and OpenMP libraries through threadpoolctl, PyTorch and
    TensorFlow through their own setters when they are imported already."""
    for name in THREAD_VARIABLES:
        os.environ[name] = "1" if name == "TF_NUM_INTEROP_THREADS" else str(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)  # the libraries loaded so far (NumPy's OpenBLAS...); kept until exit
    except ImportError:  # pragma: no cover - a dependency; the variables above still apply
        pass
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(n)
    tf = sys.modules.get("tensorflow")
    if tf is not None and hasattr(tf, "config"):
        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # TensorFlow's runtime has started: its pools are fixed
            pass


def affinity_cores() -> int:
    """The cores this process may run on (its CPU affinity; all of them where the OS has none)."""
    try:
        return len(os.sched_getaffinity(0)) or (os.cpu_count() or 1)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cgroup_quota(root: str = "/sys/fs/cgroup", membership: str | None = None) -> float | None:
    """The CPU quota of this process's control group, in cores (None: no quota, or no cgroup).

    cgroup v2: ``cpu.max`` ("QUOTA PERIOD" or "max PERIOD") of this process's group and of every group
    above it (the smallest counts); cgroup v1: ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``.
    ``membership``: the text of /proc/self/cgroup (read when not given)."""
    quotas = []
    if membership is None:
        try:
            membership = Path("/proc/self/cgroup").read_text()
        except OSError:
            membership = ""
    lines = membership.splitlines()
    v2 = next((line.split(":", 2)[2] for line in lines if line.startswith("0::")), None)
    if v2 is not None and Path(root, "cgroup.controllers").exists():
        group = Path(root, v2.lstrip("/"))
        for folder in (group, *group.parents):
            if not str(folder).startswith(root):
                break
            try:
                quota, period = Path(folder, "cpu.max").read_text().split()[:2]
            except (OSError, ValueError):
                continue
            if quota != "max" and float(period) > 0:
                quotas.append(float(quota) / float(period))
    else:
        try:
            quota = float(Path(root, "cpu", "cpu.cfs_quota_us").read_text())
            period = float(Path(root, "cpu", "cpu.cfs_period_us").read_text())
            if quota > 0 and period > 0:
                quotas.append(quota / period)
        except (OSError, ValueError):
            pass
    return round(min(quotas), 2) if quotas else None


def auto_threads() -> dict:
    """``--threads auto``: as many threads as cores are free now, at least one.

    Cores available to this process (its affinity, capped by its cgroup's CPU quota) less the cores other
    work keeps busy: measured now where the OS says (``busy_cores_now``), else the load average. Both count
    the whole machine: where this process may use only some of its cores, the busy share is scaled to them."""
    host = os.cpu_count() or 1
    affinity = affinity_cores()
    quota = cgroup_quota()
    cores = max(1, min(affinity, math.floor(quota)) if quota else affinity)
    load = load_average()
    now = busy_cores_now()
    share = min(1.0, affinity / host)
    busy_cores = int(round((now if now is not None else load or 0.0) * share))
    threads = max(1, cores - busy_cores)
    if now is not None:
        measured = f", {now:g} kept busy by other work now" + (f" (load average {load:g})" if load is not None else "")
    elif load is not None:
        measured = f", load average {load:g} keeps {busy_cores} busy"
    else:
        measured = ", load unknown"
    why = (
        f"{cores} core(s) available"
        + (f" (CPU quota {quota:g})" if quota else "")
        + (f" (affinity {affinity} of {host})" if affinity < host else "")
        + f"{measured}: {threads} free"
    )
    return {
        "threads": threads,
        "chosen_by": "auto",
        "cores": cores,
        "affinity": affinity,
        "cpu_quota": quota,
        "load_average": load,
        "busy_now": now,
        "busy_cores": busy_cores,
        "why": why,
    }


def busy_cores_now(seconds: float = 0.25, stat: str = "/proc/stat") -> float | None:
    """How many of the machine's cores other work keeps busy now: the CPU time not idle over ``seconds``
    (Linux's /proc/stat; None elsewhere). Where it can be read it decides ``--threads auto``, not the load
    average, which trails the last minute: right after a previous run it counted that run's cores as busy
    (load 0.6-1.4 on an idle 2-core machine), halving the next run's threads."""
    import time

    def totals():
        fields = Path(stat).read_text().splitlines()[0].split()[1:]
        ticks = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
        return sum(ticks), ticks[3] + ticks[4]

    try:
        total0, idle0 = totals()
        time.sleep(seconds)
        total1, idle1 = totals()
    except (OSError, ValueError, IndexError):
        return None
    elapsed = total1 - total0
    if elapsed <= 0:
        return None
    return round((os.cpu_count() or 1) * (elapsed - (idle1 - idle0)) / elapsed, 2)


def choose_threads(spec: str | int | None) -> dict:
    """Size the frameworks' thread pools for ``--threads`` (``"auto"``, the default, or a number) and
    record the choice for the manifest. With ``auto``, thread variables already set in the environment
    (OMP_NUM_THREADS...) are the user's choice and are kept. Returns the record."""
    from benchbox.errors import BenchboxError

    text = "auto" if spec is None else str(spec).strip().lower()
    given = {name: os.environ[name] for name in THREAD_VARIABLES if name in os.environ}
    if text == "auto" and given:
        choice = {"threads": given.get("OMP_NUM_THREADS"), "chosen_by": "environment", "why": f"set: {given}"}
    elif text == "auto":
        choice = auto_threads()
        set_threads(choice["threads"])
    else:
        try:
            n = int(text)
        except ValueError:
            n = 0
        if n < 1:
            raise BenchboxError(f"--threads {spec!r}: give auto (the default: the free cores) or a number from 1")
        set_threads(n)
        choice = {"threads": n, "chosen_by": "--threads", "why": f"--threads {n}"}
    THREADS_CHOSEN.clear()
    THREADS_CHOSEN.update(choice)
    return choice


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none): a busy machine explains slow timings."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def busy(load: float | None, cores: int, threads_set: bool) -> bool:
    """Default thread pools on a machine whose load (the load average, or the cores measured busy at the
    start) is at least half its cores (and at least 1)."""
    return load is not None and not threads_set and load >= max(1.0, 0.5 * cores)


def busy_note(choice: dict | None = None) -> str | None:
    """A note for a run about to time folds on a machine other jobs keep busy. With default thread pools
    it names the remedy; with pools sized by ``--threads auto`` (``choice``) it says what was chosen.
    Measured on 2 cores beside one busy process: PyTorch with 2 threads 127 ms per MobileNet v2 batch,
    with 1 thread 18.5 ms (benchmarks/busy_threads.py; docs/performance.md, "Busy machines")."""
    load, cores = load_average(), os.cpu_count() or 1
    if choice and choice.get("chosen_by") == "auto":
        now = choice.get("busy_now")
        if not busy(load if now is None else now, cores, False):
            return None
        state = f"load average {load:g} over the last minute" if now is None else f"{now:g} cores busy with other work"
        return (
            f"note: this machine is busy ({state}, {cores} cores): framework "
            f"thread pools sized to the free cores (--threads auto: {choice['why']}); timings will be slower "
            "than on an idle machine, and the report says so"
        )
    if not busy(load, cores, any(name in os.environ for name in THREAD_VARIABLES)):
        return None
    return (
        f"note: this machine is busy (load average {load:g} over the last minute, {cores} cores): framework "
        "threads waiting for busy cores can make folds 10-100x slower and their timings meaningless; "
        "--threads 1 (or fewer than the free cores) avoids that"
    )


def busy_start(env: dict) -> str | None:
    """The caveat a run's report carries when the run started on a busy machine (``env``: the manifest's
    environment): with default thread pools its timings are not comparable at all; with pools sized to
    the free cores they are slower than an idle machine's, comparable within the run only."""
    load, cores = env.get("load_average"), int(env.get("cpu_count") or 1)
    now = (env.get("threads") or {}).get("busy_now")  # measured at the start (--threads auto), not trailing
    if not busy(load if now is None else now, cores, False):
        return None
    measure = f"load average {load:g}" if now is None else f"{now:g} cores busy with other work"
    state = f"the run started on a busy machine ({measure}, {cores} cores)"
    settings = env.get("settings") or {}
    if not any(name in settings for name in THREAD_VARIABLES):
        return (
            f"Timings: {state} with the frameworks' default thread pools, which wait for busy cores: its "
            "timings are not comparable (rerun with --threads auto, the default, or on a quiet machine)."
        )
    chosen = env.get("threads") or {}
    n = chosen.get("threads") or settings.get("OMP_NUM_THREADS") or settings.get("TF_NUM_INTRAOP_THREADS")
    how = f"--threads auto: {chosen['why']}" if chosen.get("chosen_by") == "auto" else "set by the user"
    return (
        f"Timings: {state}, with {n} framework thread(s) ({how}): they are slower than on an idle machine; "
        "compare them within this run only."
    )


def settings() -> dict[str, str]:
    return {name: os.environ[name] for name in RECORDED_VARIABLES if name in os.environ}
