import atexit
import contextlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

if sys.dont_write_bytecode:
    # PYTHONDONTWRITEBYTECODE (set on some CI machines) makes every test process and every `benchbox`
    # subprocess compile each module again (pytest's assertion rewriting of the test modules alone: ~3 s per
    # process); bytecode goes to a folder of its own under the temporary directory instead, never the tree
    sys.pycache_prefix = sys.pycache_prefix or os.path.join(tempfile.gettempdir(), "benchbox-tests-pycache")
    sys.dont_write_bytecode = False
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = sys.pycache_prefix
if not os.environ.get("BENCHBOX_CACHE"):
    # the test session's caches (decoded images, embeddings, network facts) in a folder of its own, shared by
    # the xdist workers (they inherit this variable), never the user's cache; removed by the process that made it
    os.environ["BENCHBOX_CACHE"] = tempfile.mkdtemp(prefix="benchbox-tests-cache-")
    atexit.register(shutil.rmtree, os.environ["BENCHBOX_CACHE"], ignore_errors=True)
if os.environ.get("PYTEST_XDIST_WORKER"):
    # two test workers on two cores: one framework thread each (set before torch or TensorFlow loads;
    # the CLI subprocesses the tests start inherit it), else both workers' thread pools fight for the cores
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(_name, "1")
# xdist workers get COLUMNS=80/LINES=24, which the CLI honours for piped output: the CLI subprocesses of
# the tests must render as in a plain pipe (200 columns), whatever started pytest
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)


class TorchvisionBeforeTensorFlow:
    """torchvision's C extension segfaults when it loads after TensorFlow's (benchbox's own import_keras loads
    it first; tests that import keras or tensorflow directly do not), and one test process may hold both:
    the first import of keras or tensorflow in a test process loads torchvision just before. Lazily, not
    here at once: torchvision costs ~3 s of start-up in every test process, and the fast tier's seldom
    load TensorFlow."""

    def find_spec(self, name, path=None, target=None):
        if (
            name.partition(".")[0] in ("keras", "tensorflow")
            and "torchvision" not in sys.modules
            and self.importing()  # not importlib.util.find_spec("keras"), which only asks whether it is there
        ):
            with contextlib.suppress(ValueError):  # removed by another thread's import meanwhile
                sys.meta_path.remove(self)
            if importlib.util.find_spec("torchvision") is not None:
                import torchvision  # noqa: F401
        return None  # the usual finders import the module itself

    @staticmethod
    def importing() -> bool:
        """Whether an import statement (importlib's _find_and_load) asks, a few frames up."""
        frame = sys._getframe(1)
        for _ in range(4):
            if frame is None:
                return False
            if frame.f_code.co_name == "_find_and_load_unlocked":
                return True
            frame = frame.f_back
        return False


if "tensorflow" not in sys.modules and "keras" not in sys.modules:
    sys.meta_path.insert(0, TorchvisionBeforeTensorFlow())

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

# frozen deep (of 154 layers; the study's cutoff, 10, is tested in test_backbones.py): TensorFlow traces a
# short training step, and a `benchbox run` of it costs 24 s of CPU rather than 40
KERAS_MNV2 = """
[backbones.k-mnv2]
plugin = "keras/mobilenet_v2"
weights = "none"
input_size = [48, 48]
alpha = 0.35
cutoff = 140
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


#: a child process that runs many `benchbox` command lines through the CLI's entry point (benchbox.cli.main,
#: what the `benchbox` script calls), each with its own working folder, output and exit code
BATCH = textwrap.dedent(
    """
    import contextlib, io, json, os, sys, traceback
    from benchbox.cli import main

    results = {}
    for key, args, cwd in json.load(sys.stdin):
        out, err, code = io.StringIO(), io.StringIO(), 0
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(args)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if isinstance(exc.code, str):
                    print(exc.code, file=sys.stderr)
            except BaseException:  # what Python would print as the process died
                traceback.print_exc()
                code = 1
        results[key] = [code, out.getvalue(), err.getvalue()]
    print("BATCH" + json.dumps(results))
    """
)


def run_batch(calls: dict) -> dict:
    """Independent command lines ({key: (args, run_cli keywords)}) that need no process of their own (no
    lock, signal, kill or framework state at stake), run one after the other in one child process per
    environment: a `benchbox` process costs ~1 s of CPU to start (test_bad_inputs.py's 70 such cases cost
    70 s in processes of their own). Their results by key, as run_cli gives them."""
    groups: dict = {}
    for key, (args, kw) in calls.items():
        env = tuple(sorted((kw.get("env") or {}).items()))
        groups.setdefault(env, []).append([key, [str(a) for a in args], str(kw.get("cwd") or os.getcwd())])
    results = {}
    for env, batch in groups.items():
        full_env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        full_env.update(dict(env))
        res = subprocess.run(
            [sys.executable, "-c", BATCH],
            input=json.dumps(batch),
            capture_output=True,
            text=True,
            env=full_env,
            timeout=1800,  # a hung command stops the test, not the suite; far above any batch's run time
        )
        lines = [line for line in res.stdout.splitlines() if line.startswith("BATCH")]
        assert res.returncode == 0 and lines, f"the batch process failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
        for key, (code, out, err) in json.loads(lines[-1][len("BATCH") :]).items():
            results[key] = subprocess.CompletedProcess(["benchbox", *map(str, calls[key][0])], code, out, err)
    return {key: results[key] for key in calls}


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


def shared_root(tmp_path_factory) -> Path:
    """The temp folder both xdist workers see (the session's own one without xdist)."""
    root = tmp_path_factory.getbasetemp()
    return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


@contextlib.contextmanager
def file_lock(path: Path):
    """One holder at a time across the test workers (processes)."""
    import fcntl

    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def once_per_session(tmp_path_factory, name: str, compute):
    """``compute()`` (a JSON value) once per test session, shared by the xdist workers: a module fixture
    that both workers need would otherwise run in each (worksteal splits a module's tests between them).
    Registered with ``start_early``, it was started in the background when the session began."""
    root = shared_root(tmp_path_factory)
    done = root / f"{name}.json"
    with file_lock(root / f"{name}.lock"):
        if not done.exists():
            value = compute(tmp_path_factory)
            done.write_text(json.dumps(value))
            return value
    return json.loads(done.read_text())


#: (module name, fixture name) -> (name, compute(tmp_path_factory)): long shared computations to start
#: when a session that runs a test using that fixture begins
EARLY: dict = {}


def start_early(module: str, fixture: str, name: str, compute) -> None:
    """Register ``once_per_session(..., name, compute)``, which fixture ``fixture`` of test module ``module``
    returns, to start in a background thread as soon as a session that runs a test using the fixture begins,
    in the first worker to get there: the other worker would otherwise sit idle on the lock while it runs
    (the Keras backends' probes: ~45 s). A session that runs none of those tests (the fast tier) starts none."""
    EARLY[(module, fixture)] = (name, compute)


@pytest.fixture(scope="session", autouse=True)
def early_shared_work(request, tmp_path_factory):
    import fcntl
    import threading

    used = {
        (item.module.__name__, fixture)
        for item in request.session.items
        if getattr(item, "module", None)
        for fixture in getattr(item, "fixturenames", ())
    }
    for key, (name, compute) in EARLY.items():
        if key not in used:
            continue  # its tests are deselected (-m "not slow", -k ...): nothing to compute
        root = shared_root(tmp_path_factory)
        lock = open(root / f"{name}.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another worker has it in hand
            lock.close()
            continue

        def work(lock=lock, done=root / f"{name}.json", compute=compute):
            try:
                if not done.exists():
                    value = compute(tmp_path_factory)  # a failure leaves no result: the fixture computes and shows it
                    done.write_text(json.dumps(value))
            except Exception:  # noqa: BLE001
                pass
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
                lock.close()

        threading.Thread(target=work, name=f"early {name}", daemon=True).start()
    yield


@pytest.fixture(scope="session")
def example_site(tmp_path_factory):
    """tests/example_plugin, a third party's plugin package, pip-installed into a folder of its own:
    once per test session, shared by the xdist workers (a file lock; the install takes seconds). Read only."""
    root = shared_root(tmp_path_factory)
    site = root / "example-site"
    with file_lock(root / "example-site.lock"):
        if not (site / ".installed").exists():
            shutil.rmtree(site, ignore_errors=True)
            pip_install_into(ROOT / "tests" / "example_plugin", site)
            (site / ".installed").write_text("")
    return site


@pytest.fixture(scope="session")
def example_env(tmp_path_factory):
    """Environment for a `benchbox` subprocess that sees the example plugin: its package beside a
    hand-written dist-info (its pyproject's name, version and entry points), which importlib.metadata reads
    as an installed distribution; a pip install costs 4-5 s of CPU (test_third_party_plugin.py does it)."""
    import tomllib

    source = ROOT / "tests" / "example_plugin"
    site = tmp_path_factory.mktemp("example-plugin")
    shutil.copytree(source / "benchbox_example", site / "benchbox_example")
    project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    points = [f"{name} = {target}" for name, target in project["entry-points"]["benchbox"].items()]
    (info / "entry_points.txt").write_text("\n".join(["[benchbox]", *points]) + "\n")
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def fit_predict(backbone, job):
    """Train and predict one fold through the harness, as `benchbox run` does (timings, checks)."""
    from benchbox.execute.harness import run_fold

    return run_fold(backbone, backbone.name, job, "a test fold")
