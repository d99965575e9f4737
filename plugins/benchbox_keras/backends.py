"""Which Keras backend a process runs: framework-free (importing this never imports Keras).

Keras 3 picks its backend once, when it is first imported, from ``KERAS_BACKEND`` (else the
``backend`` field of ``$KERAS_HOME/keras.json``, else TensorFlow). benchbox keeps that rule and
adds two ways to choose: ``benchbox run/bench --keras-backend NAME`` (sets ``KERAS_BACKEND``
before anything imports Keras) and a Keras backbone's ``backend`` option ("auto": whatever the
process would pick). The first Keras backbone prepared or trained in a process pins the backend
(``KERAS_BACKEND`` is set to it, so Ray workers started from this process inherit it); a later one
that asks for another gets a BenchboxError saying so, since one process cannot run two.

``import_keras`` imports Keras itself, once the backend is chosen, for the engine and the families.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import sys

from benchbox.contracts import Availability
from benchbox.errors import BenchboxError

BACKENDS = ("tensorflow", "jax", "torch")
INSTALLS = {
    "tensorflow": "pip install 'benchbox[keras]' (CPU) or pip install 'tensorflow[and-cuda]' (NVIDIA GPU)",
    "jax": "pip install jax (CPU) or pip install 'jax[cuda12]' (NVIDIA GPU)",
    "torch": "pip install 'benchbox[torch]' (the PyTorch build with CUDA where pip finds one)",
}
#: who pinned this process's backend, for the error a conflicting backbone gets
_PINNED: dict[str, str] = {}


def installed(backend: str) -> bool:
    return importlib.util.find_spec(backend) is not None


def configured_backend() -> str:
    """The backend Keras would pick if imported now: KERAS_BACKEND, keras.json, else tensorflow."""
    if "keras" in sys.modules and hasattr(sys.modules["keras"], "backend"):
        return sys.modules["keras"].backend.backend()
    env = os.environ.get("KERAS_BACKEND", "").strip()
    if env:
        return env
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json"), encoding="utf-8") as f:
            return str(json.load(f).get("backend") or "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def wanted_backend(options) -> str:
    wanted = str((options or {}).get("backend", "auto"))
    return configured_backend() if wanted == "auto" else wanted


def option_problems(options) -> list[str]:
    """Problems with a backbone's ``backend`` option (and the backend it resolves to) that need no Keras."""
    value = (options or {}).get("backend", "auto")
    if value != "auto" and value not in BACKENDS:
        return [f"backend: {value!r} is not a Keras backend; choose auto, {', '.join(BACKENDS)}"]
    backend = wanted_backend(options)
    if backend not in BACKENDS:
        return [
            f"backend: KERAS_BACKEND (or keras.json) names {backend!r}; benchbox runs Keras on {', '.join(BACKENDS)}"
        ]
    if not installed(backend):
        how = "Keras's default backend" if value == "auto" else f"backend = {value!r}"
        return [
            f"backend: {how} is {backend}, which is not installed; install it ({INSTALLS[backend]}) or choose "
            f"an installed one with --keras-backend / KERAS_BACKEND / the backbone's backend option"
        ]
    return []


def select_backend(options, who: str) -> str:
    """Pin this process's Keras backend to what ``options`` ask for; a BenchboxError when Keras is
    already running another one or another backbone pinned another one."""
    value = str((options or {}).get("backend", "auto"))
    problems = option_problems(options)
    if problems:
        raise BenchboxError(f"{who}: {problems[0]}")
    backend = wanted_backend(options)
    if "keras" in sys.modules and hasattr(sys.modules["keras"], "backend"):
        running = sys.modules["keras"].backend.backend()
        if running != backend:
            raise BenchboxError(
                f"{who}: backend = {value!r} asks for Keras on {backend}, but this process already runs Keras on "
                f"{running}{_by()}; Keras runs one backend per process: give every Keras backbone of the suite "
                f"the same backend (or leave it auto and use --keras-backend)"
            )
    else:
        env = os.environ.get("KERAS_BACKEND", "").strip()
        if value != "auto" and env and env != backend:
            raise BenchboxError(
                f"{who}: backend = {value!r}, but KERAS_BACKEND is {env!r}{_by() or ' (--keras-backend or the environment)'}; "
                f"Keras runs one backend per process: make them agree"
            )
    os.environ["KERAS_BACKEND"] = backend
    _PINNED.setdefault("by", who)
    return backend


def _by() -> str:
    return f" (pinned by {_PINNED['by']})" if "by" in _PINNED else ""


def availability(install: str) -> Availability:
    """Keras and the backend it would run on (any backend when the process has not chosen one)."""
    if not installed("keras"):
        return Availability(False, f"missing keras; install with: {install}")
    env = os.environ.get("KERAS_BACKEND", "").strip()
    if env in BACKENDS:
        if not installed(env):
            return Availability(False, f"KERAS_BACKEND={env}, but {env} is not installed; {INSTALLS[env]}")
        return Availability(True)
    if not any(installed(b) for b in BACKENDS):
        return Availability(False, f"no Keras backend installed (tensorflow, jax or torch); install with: {install}")
    return Availability(True)


def choose_backend(name: str, overrides: dict | None = None) -> None:
    """``--keras-backend NAME``: Keras reads KERAS_BACKEND once, when first imported (by a keras/*
    backbone's engine, never by the core), so setting it here, before any backbone runs, chooses it."""
    if name not in BACKENDS:
        raise BenchboxError(f"--keras-backend {name!r}: choose {', '.join(BACKENDS[:-1])} or {BACKENDS[-1]}")
    loaded = sys.modules.get("keras")
    if loaded is not None and hasattr(loaded, "backend") and loaded.backend.backend() != name:
        raise BenchboxError(f"--keras-backend {name}: Keras is already running on {loaded.backend.backend()}")
    os.environ["KERAS_BACKEND"] = name


def import_keras():
    """Import Keras, working around a crash: torchvision segfaults when its C extension loads
    after TensorFlow's, so when torchvision is installed it is imported first."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" not in sys.modules and importlib.util.find_spec("torchvision") is not None:
        import torchvision  # noqa: F401
    quiet = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") != "0"
    with _native_logs_silenced(quiet):
        import keras
    if quiet:  # TensorFlow's Python warnings ("... triggered tf.function retracing") only with --verbose
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
    return keras


@contextlib.contextmanager
def _native_logs_silenced(silence: bool):
    """TensorFlow 2.21 logs through absl before it reads ``TF_CPP_MIN_LOG_LEVEL`` ("All log messages
    before absl::InitializeLog()", "oneDNN custom operations are on"), from C++ straight to file
    descriptor 2; only closing that descriptor for the import keeps them above the user's table.
    ``--verbose`` (which leaves the level unset) shows them."""
    if not silence:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
