import importlib.util
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # two test workers on two cores: one framework thread each (set before torch or TensorFlow loads;
    # the CLI subprocesses the tests start inherit it), else both workers' thread pools fight for the cores
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(_name, "1")
# xdist workers get COLUMNS=80/LINES=24, which the CLI honours for piped output: the CLI subprocesses of
# the tests must render as in a plain pipe (200 columns), whatever started pytest
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data"
WEIGHTS = SHARED / "weights"

HAS_KERAS = importlib.util.find_spec("keras") is not None and importlib.util.find_spec("tensorflow") is not None
HAS_TORCH = importlib.util.find_spec("torch") is not None and importlib.util.find_spec("torchvision") is not None
needs_keras = pytest.mark.skipif(
    not HAS_KERAS, reason="Keras 3 + TensorFlow not installed (pip install 'benchbox[keras]')"
)
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="PyTorch not installed (pip install 'benchbox[torch]')")
needs_data = pytest.mark.skipif(not (DATA / "chest_xray").is_dir(), reason=f"real X-rays not found at {DATA}")


def fold_record(cell, fold: int, classes, ids, y_true, probabilities, **fields):
    """A finished fold built by hand, for tests that store or score runs without training: seeded with its
    fold number, each image its own patient from source "a", timed at 1 s of training, 0.1 s of prediction
    and 100 images/s, unless ``fields`` (any other FoldRecord field) say otherwise."""
    from benchbox.execute.records import FoldRecord

    ids = list(ids)
    made = {"seed": fold, "test_groups": ids, "test_sources": ["a"] * len(ids), "n_train": 0}
    timed = {"train_seconds": 1.0, "predict_seconds": 0.1, "infer_images_per_sec": 100.0}
    return FoldRecord(
        cell=cell,
        fold=fold,
        classes=list(classes),
        test_ids=ids,
        y_true=y_true,
        probabilities=probabilities,
        **{**made, **timed, **fields},
    )


def assert_mentions(text: str, *parts: str) -> None:
    """Every part is in the message (an error a user must act on names all it should)."""
    missing = [p for p in parts if p not in text]
    assert not missing, f"{missing} not in: {text}"


@pytest.fixture
def no_network(monkeypatch):
    """No connection can be opened: what a machine without a network gives a download."""

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable (simulated by the test)")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="session")
def registry():
    from benchbox.plugins import load_registry

    return load_registry()


def write_suite(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


TINY_SUITE = """
name = "{name}"
seed = 3
output_dir = "{out}"

[protocol]
k = 3
grouped = true

[training]
epochs = 1
batch_size = 8

[datasets.syn]
plugin = "synthetic"
images = 30
patients = 12

{backbones}
"""

KERAS_MNV2 = """
[backbones.k-mnv2]
plugin = "keras/mobilenet_v2"
weights = "none"
input_size = [48, 48]
alpha = 0.35
"""

TORCH_MNV2 = """
[backbones.t-mnv2]
plugin = "torch/mobilenet_v2"
weights = "none"
input_size = [48, 48]
"""


def tiny_suite(tmp_path: Path, backbones: str, name: str = "tiny") -> Path:
    return write_suite(
        tmp_path / f"{name}.toml", TINY_SUITE.format(name=name, out=tmp_path / "runs", backbones=backbones)
    )


def run_cli(*args, cwd=None, env=None, timeout=600):
    """The real `benchbox` command in a subprocess."""
    exe = Path(sys.executable).with_name("benchbox")
    full_env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}  # tables as in CI
    full_env.update(env or {})
    return subprocess.run(
        [str(exe), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=timeout
    )


def pip_install_into(package: Path, target: Path) -> Path:
    """A plugin package pip-installed into a folder of its own (no dependencies, no build isolation), as a
    third party's would be; a subprocess with the folder on PYTHONPATH sees its entry points."""
    res = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target",
         str(target), str(package)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return target


@pytest.fixture(scope="session")
def example_site(tmp_path_factory):
    """tests/example_plugin, a third party's plugin package, pip-installed into a folder of its own."""
    return pip_install_into(ROOT / "tests" / "example_plugin", tmp_path_factory.mktemp("example-site"))


@pytest.fixture(scope="session")
def example_env(example_site):
    """Environment for a `benchbox` subprocess that sees the example plugin."""
    return {"PYTHONPATH": os.pathsep.join([str(example_site), os.environ.get("PYTHONPATH", "")])}


def fit_predict(backbone, job):
    """Train and predict one fold through the harness, as `benchbox run` does (timings, checks)."""
    from benchbox.execute.harness import run_fold

    return run_fold(backbone, backbone.name, job, "a test fold")
