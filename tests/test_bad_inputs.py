"""Bad inputs and faults (issue 14): nothing a user types, and nothing a plugin returns, may crash
benchbox or poison a run.

Every case runs a `benchbox` command line in a subprocess and checks what a user sees: the exit
code (1 error, 2 usage, 130 interrupted), no Python traceback, a message naming the file, field or
plugin, and, where a plugin returned bad output, that no fold record was stored from it. Cases that stop
before any training, or only lock, resume or report a finished run, run one after the other through the
CLI's entry point in one child process (``run_batch``, tests/conftest.py); interrupts, kills, broken
plugin installations and the runs a test compares get a `benchbox` process of their own. Hostile
plugins are small modules written here and made visible as entry points through a hand-written
``*.dist-info/entry_points.txt`` in a folder on PYTHONPATH (importlib.metadata reads it as an
installed distribution). docs/reliability.md lists these cases in a table.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import HAS_TORCH, needs_keras, run_batch, run_cli

# every case runs the CLI in a subprocess: 126 cases take a minute or more, so the file is outside the fast tier
pytestmark = pytest.mark.slow

EXE = Path(sys.executable).with_name("benchbox")


# --- helpers ---------------------------------------------------------------------------------
def plugin_site(root: Path, dist: str, modules: dict[str, str]) -> Path:
    """A folder that importlib.metadata reads as the installed distribution ``dist``, whose
    ``benchbox`` entry points are the given modules ({entry point name: module source})."""
    root.mkdir(parents=True, exist_ok=True)
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = ["[benchbox]"]
    for name, source in modules.items():
        module = f"{dist}_{name}".replace("-", "_")
        (root / f"{module}.py").write_text(textwrap.dedent(source))
        lines.append(f"{name} = {module}")
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return root


def env_with(*sites, **variables) -> dict:
    path = os.pathsep.join([*map(str, sites), os.environ.get("PYTHONPATH", "")])
    return {"PYTHONPATH": path, **variables}


def flat(text: str) -> str:
    """Output with rich's line wrapping undone (messages wrap at 200 columns)."""
    return " ".join(text.split())


def check(res, code: int, *needles: str) -> str:
    """Exit code as documented, no traceback anywhere, and every needle in the output."""
    out = res.stdout + res.stderr
    assert res.returncode == code, f"exit {res.returncode}, expected {code}:\n{out}"
    assert "Traceback" not in out, out
    text = flat(out)
    for needle in needles:
        assert flat(needle) in text, f"{needle!r} not in:\n{out}"
    return text


def records(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (Path(run_dir) / "folds").glob("*.json"))


def only_run(out_dir: Path) -> Path:
    runs = [p for p in Path(out_dir).iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture
def start_cli():
    """Start `benchbox` in the background; whatever is still running at the end of the test is killed."""
    started = []

    def start(*args, env=None) -> subprocess.Popen:
        proc = subprocess.Popen(
            [str(EXE), *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
            # Ctrl-C must reach it as at a terminal: an xdist worker ignores SIGINT, and an ignored signal
            # is inherited through exec (Python then installs no KeyboardInterrupt handler)
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def wait_for(predicate, timeout: float = 600, what: str = "a condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


SUITE = """\
name = "{name}"
seed = {seed}
output_dir = "{out}"
evaluators = {evaluators}
{top}
[protocol]
k = {k}
grouped = true

[training]
epochs = 1
batch_size = 8

[datasets.{alias}]
{dataset}

[backbones.c]
{backbone}
"""
SYNTHETIC = 'plugin = "synthetic"\nimages = 30\npatients = 12'
CENTROID = 'plugin = "hostile/centroid"'


def suite(
    tmp_path: Path,
    name: str = "bad",
    backbone: str = CENTROID,
    dataset: str = SYNTHETIC,
    alias: str = "syn",
    top: str = "",
    k: int = 3,
    evaluators: str = '["paper"]',
    out: Path | None = None,
    seed: int = 3,
) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        SUITE.format(
            name=name,
            out=out or tmp_path / "runs",
            evaluators=evaluators,
            top=top,
            k=k,
            alias=alias,
            dataset=dataset,
            backbone=backbone,
            seed=seed,
        )
    )
    return path


# --- the hostile plugin ----------------------------------------------------------------------
HOSTILE = '''
"""Plugins that misbehave on purpose. hostile/centroid's option ``mode`` picks what it does wrong;
the environment variable HOSTILE_MODE overrides it, so a run can be made bad and then fixed
without changing its suite."""
import os
import time

import numpy as np
import pandas as pd

from benchbox import hookimpl
from benchbox.contracts import Backbone, Dataset, Evaluator, MetricSpec, SampleSet


def mode(options):
    return os.environ.get("HOSTILE_MODE") or options["mode"]


class Centroid(Backbone):
    """Nearest class mean on raw pixels: trains in milliseconds."""

    name = "hostile/centroid"
    framework = "numpy"
    description = "nearest class mean; misbehaves as its option mode (or HOSTILE_MODE) says"
    defaults = {"input_size": [32, 32], "weights": "none", "mode": "ok"}

    def fit(self, job):
        time.sleep(float(os.environ.get("HOSTILE_SLEEP", "0")))
        m = mode(job.options)
        if m == "fit_raises":
            raise RuntimeError("planted failure in fit")
        x = job.x_train.reshape(len(job.x_train), -1) / 255.0
        means = np.stack([x[job.y_train == c].mean(0) if (job.y_train == c).any() else np.zeros(x.shape[1])
                          for c in range(job.num_classes)])
        return means, m

    def predict(self, model, images, ids=None):
        means, m = model
        x = images.reshape(len(images), -1) / 255.0
        d = -((x[:, None, :] - means[None]) ** 2).sum(-1) / x.shape[1] * 50
        p = np.exp(d - d.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        k = p.shape[1]
        if m == "predict_raises":
            raise ValueError("planted failure in predict")
        if m == "nan":
            p[0, 0] = np.nan
        if m == "shape":
            p = p[:, :-1]
        if m == "rows":
            p = p[:-1]
        if m == "negative":  # rows still sum to one
            p = 2 * p - 1 / k
        if m == "sum":  # every value in [0, 1], rows sum to one half
            p = p / 2
        if m == "text":
            return "not probabilities"
        return p

    def info(self, model):
        return "not a dict" if model[1] == "info" else {"classes": len(model[0])}


class ScriptName(Centroid):
    name = "hostile/<script>alert(1)</script>"
    description = 42  # not a string


class MarkupDescription(Centroid):
    name = "hostile/markup"
    description = "closes nothing [/] and [red]colours[/red] nothing"


class CheckRaises(Centroid):
    name = "hostile/check_raises"

    def check_options(self, options):
        raise RuntimeError("planted failure in check_options")


class PrepareRaises(Centroid):
    name = "hostile/prepare_raises"

    def prepare(self, options):
        raise OSError("planted failure in prepare")


class AvailabilityRaises(Centroid):
    name = "hostile/availability_raises"

    def availability(self):
        raise RuntimeError("planted failure in availability")


class SamplesRaises(Dataset):
    name = "hostile-samples"
    description = "samples() raises"

    def samples(self, options, seed, data_dir):
        raise KeyError("planted failure in samples")


class SamplesJunk(Dataset):
    name = "hostile-junk"
    description = "samples() returns a dict"

    def samples(self, options, seed, data_dir):
        return {"not": "a SampleSet"}


def _table(classes, n=12):
    return pd.DataFrame({"id": [f"i{i:02d}" for i in range(n)], "label": [classes[i % 2] for i in range(n)],
                         "group": [f"p{i:02d}" for i in range(n)], "source": ["[/]hostile"] * n})


class LoadWrong(Dataset):
    name = "hostile-load"
    description = "load() returns the wrong shape"

    def samples(self, options, seed, data_dir):
        classes = ("a", "b")
        return SampleSet(table=_table(classes), classes=classes, positive_class="a",
                         load=lambda table, size: np.zeros((len(table), 3), np.uint8))


class Names(Dataset):
    """Class names that are HTML and rich markup."""

    name = "hostile-names"
    description = "class names with <script> and [/]"
    CLASSES = ("<script>alert(1)</script>", "[/]normal")

    def samples(self, options, seed, data_dir):
        def load(table, size):
            rng = np.random.default_rng(0)
            base = np.where(table["label"].to_numpy() == self.CLASSES[0], 60, 190)
            noise = rng.integers(0, 40, (len(table), *size))
            return (base[:, None, None] + noise).astype(np.uint8)

        return SampleSet(table=_table(self.CLASSES), classes=self.CLASSES, positive_class=self.CLASSES[0], load=load)


class EvaluatorRaises(Evaluator):
    name = "hostile-eval"
    description = "raises everywhere"
    metrics = (MetricSpec("hostile_metric", "Hostile"),)

    def evaluate(self, records, classes, positive_class):
        raise ZeroDivisionError("planted failure in evaluate")

    def sections(self, result):
        raise RuntimeError("planted failure in sections")

    def plots(self, result, directory):
        raise RuntimeError("planted failure in plots")


class BadLabel(Evaluator):
    """A metric whose label matplotlib cannot parse (and that is HTML)."""

    name = "hostile-label"
    description = "metric label matplotlib cannot draw"
    metrics = (MetricSpec("odd", "<b>odd</b> $\\\\frac{$", plot=True),)

    def evaluate(self, records, classes, positive_class):
        return {"odd": 0.5, "odd_folds": [0.4, 0.5, 0.6][: len(records)]}


@hookimpl
def benchbox_backbones():
    return [Centroid(), ScriptName(), MarkupDescription(), CheckRaises(), PrepareRaises(), AvailabilityRaises()]


@hookimpl
def benchbox_datasets():
    return [SamplesRaises(), SamplesJunk(), LoadWrong(), Names()]


@hookimpl
def benchbox_evaluators():
    return [EvaluatorRaises(), BadLabel()]


@hookimpl
def benchbox_fold_end(run_dir, record):
    if os.environ.get("HOSTILE_HOOK") == "fold_end":
        raise RuntimeError("planted failure in fold_end")


@hookimpl
def benchbox_report_sections(result):
    if os.environ.get("HOSTILE_HOOK") == "sections":
        raise RuntimeError("planted failure in report_sections")
    return []
'''

BROKEN = {
    "typo": (
        "from benchbox import hookimpl\n\n@hookimpl\ndef benchbox_backbonez():\n    return []\n",
        "benchbox_backbonez",
    ),
    "unmarked": ("def benchbox_backbones():\n    return []\n", "not marked with @benchbox.hookimpl"),
    "import_error": (
        "raise ImportError('planted: needs a module that is not installed')\n",
        "planted: needs a module that is not installed",
    ),
    "hook_raises": (
        "from benchbox import hookimpl\n\n@hookimpl\ndef benchbox_backbones():\n"
        "    raise RuntimeError('planted failure in benchbox_backbones')\n",
        "planted failure in benchbox_backbones",
    ),
    "nameless": (
        "from benchbox import hookimpl\nfrom benchbox.contracts import Backbone\n\n@hookimpl\n"
        "def benchbox_backbones():\n    return [Backbone()]\n",
        "without a name",
    ),
    "duplicate": (
        "from benchbox import hookimpl\nfrom benchbox.contracts import Dataset\n\nclass D(Dataset):\n"
        "    name = 'synthetic'\n\n@hookimpl\ndef benchbox_datasets():\n    return [D()]\n",
        "already provided by",
    ),
}


@pytest.fixture(scope="session")
def hostile(tmp_path_factory) -> Path:
    return plugin_site(tmp_path_factory.mktemp("hostile-site"), "hostile", {"hostile": HOSTILE})


@pytest.fixture(scope="session")
def henv(hostile, tmp_path_factory):
    """Environment of a `benchbox` that sees the hostile plugin (and a decode cache of its own)."""
    return env_with(hostile, BENCHBOX_CACHE=str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def finished(tmp_path_factory, henv) -> Path:
    """A finished 5-fold run of hostile/centroid (well-behaved) on the synthetic set; copy it before changing it."""
    tmp = tmp_path_factory.mktemp("finished")
    res = run_cli("run", suite(tmp, name="good", k=5), env=henv)
    check(res, 0)
    return only_run(tmp / "runs")


def good_suite(tmp_path: Path, finished: Path) -> Path:
    """The suite of ``finished`` (same content and output_dir, so the same digest), written in tmp_path."""
    return suite(tmp_path, name="good", k=5, out=finished.parent)


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    target = tmp_path / "copy" / finished.name
    shutil.copytree(finished, target)
    return target


def run_group(calls: dict) -> dict:
    """Independent `benchbox` calls ({key: (args, run_cli keywords)}), two at a time (one per core of
    a 2-core machine); their results by key. Each case of the group still asserts on its own."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(run_cli, *args, **kw) for key, (args, kw) in calls.items()}
        return {key: future.result() for key, future in futures.items()}


def cases(table: dict, marked: dict | None = None) -> list:
    """Parametrize ids of a case table, with marks where given."""
    return [pytest.param(key, marks=(marked or {}).get(key, ()), id=key) for key in table]


# --- 1. usage errors: click's one-line usage message, exit 2 -------------------------------------
USAGE = {  # case -> (arguments, what the message says)
    "run-no-suite": (["run"], "Missing argument"),
    "run-unknown-option": (["run", "s.toml", "--bogus"], "No such option: --bogus"),
    "leaderboard-no-runs": (["leaderboard"], "Missing argument"),
    "unknown-command": (["frobnicate"], "No such command 'frobnicate'"),
    "report-no-run": (["report"], "Missing argument"),
    "compare-missing-backbone": (["compare", "runs/x", "a"], "Missing argument"),
    "compare-n-boot-1": (["compare", "runs/x", "a", "b", "--n-boot", "1"], "--n-boot"),
    "describe-seed-negative": (["data", "describe", "--seed", "-1"], "--seed"),
    "bench-no-backbone": (["bench"], "Missing argument"),
    "run-retries-text": (["run", "s.toml", "--max-retries", "many"], "--max-retries"),
}


@pytest.fixture(scope="module")
def usage_results(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("usage")
    return run_batch({case: (args, {"cwd": cwd}) for case, (args, _) in USAGE.items()})


@pytest.mark.parametrize("case", cases(USAGE))
def test_usage_errors_are_one_line_and_exit_2(usage_results, case):
    out = check(usage_results[case], 2, USAGE[case][1], "Usage:")
    assert "Try 'benchbox" in out


# --- 2. suite values `validate` refuses (before anything runs): exit 1, naming the key ------------
VALIDATE = {  # case -> (suite(...) keywords, what the message says)
    "seed-negative": ({"seed": -1}, ["seed: must be between 0 and 4294967295 (2**32 - 1), got -1"]),
    "seed-2**33": ({"seed": 2**33}, [f"seed: must be between 0 and 4294967295 (2**32 - 1), got {2**33}"]),
    "input-size-huge": (
        {"backbone": CENTROID + "\ninput_size = [100000, 100000]"},
        ["backbones.c.input_size: 100000x100000 is beyond 2048 pixels per side", "GiB"],
    ),
    "input-size-tiny": (
        {"backbone": CENTROID + "\ninput_size = [8, 8]"},
        ["backbones.c.input_size: must be [height, width], integers >= 32"],
    ),
    "name-path": ({"name": "../escape"}, ["name: required: a name of letters, digits"]),
    "alias-html": ({"alias": '"<script>"'}, ["datasets.<script>: names may use letters, digits"]),
    "unknown-backbone": (
        {"backbone": 'plugin = "nope/net"'},
        ["backbones.c.plugin: unknown backbone plugin 'nope/net'", "hostile/centroid"],
    ),
    "option-type": (
        {"dataset": SYNTHETIC.replace("images = 30", 'images = "thirty"')},
        ["datasets.syn.images: must be an integer"],
    ),
    "weights-missing": (
        {"backbone": 'plugin = "torch/mobilenet_v2"\nweights = "missing.pth"'},
        ["weights: 'missing.pth' is neither 'imagenet', 'none' nor an existing file"],
    ),
    "check-options-raises": (
        {"backbone": 'plugin = "hostile/check_raises"'},
        ["backbones.c: plugin hostile/check_raises failed in check_options: RuntimeError: planted failure"],
    ),
    "torch-cutoff": (
        {"backbone": 'plugin = "torch/vgg19"\ncutoff = 100000'},
        ["backbones.c: cutoff: 100000 is beyond the depth of vgg19"],
    ),
    "keras-cutoff": (
        {"backbone": 'plugin = "keras/vgg19"\ncutoff = 100000'},
        ["cutoff: 100000 is beyond the depth of vgg19 (22 Keras layers)"],
    ),
    "keras-alpha": (
        {"backbone": 'plugin = "keras/mobilenet_v2"\nalpha = 7'},
        ["alpha: 7 is not a width keras.applications.MobileNetV2 supports", "0.35"],
    ),
    "output-dir-file": ({"out": "{tmp}/afile"}, ["output_dir:", "is a file"]),
    "output-dir-under-file": ({"out": "{tmp}/afile/runs"}, ["output_dir:", "which is a file"]),
}


@pytest.fixture(scope="module")
def validate_results(tmp_path_factory, henv):
    calls = {}
    for case, (kw, _) in VALIDATE.items():
        tmp = tmp_path_factory.mktemp(case.replace("*", "x"))
        (tmp / "afile").write_text("x")
        kw = {k: v.format(tmp=tmp) if k == "out" else v for k, v in kw.items()}
        calls[case] = (["validate", suite(tmp, **kw)], {"env": henv, "cwd": tmp})
    return run_batch(calls)


@pytest.mark.parametrize("case", cases(VALIDATE, {"keras-cutoff": needs_keras, "keras-alpha": needs_keras}))
def test_validate_refuses_values_that_would_fail_later(validate_results, case):
    check(validate_results[case], 1, ".toml: 1 problem(s)", *VALIDATE[case][1])


UNREADABLE = {  # case -> (suite file content; None: missing, "folder": a folder), what the message says
    "non-utf8": (b'name = "caf\xe9"\n', ["line 1: not UTF-8 text (byte 0xe9)", "save it with that encoding"]),
    "not-toml": (b'name = "x"\n[datasets\n', ["not valid TOML"]),
    "missing": (None, ["cannot read the file: No such file or directory"]),
    "folder": ("folder", ["is a folder; pass a suite file"]),
}


@pytest.fixture(scope="module")
def path_results(tmp_path_factory, henv):
    """Suite files that cannot be read (validate, and run for one), and run/output folders that are files."""
    calls, dirs = {}, {}
    for case, (content, _) in UNREADABLE.items():
        path = tmp_path_factory.mktemp(case) / "s.toml"
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content == "folder":
            path.mkdir()
        calls[case] = (["validate", path], {})
        if case == "non-utf8":
            calls["run-non-utf8"] = (["run", path], {})
    for case in ("run-dir-file", "run-dir-under-file", "output-dir-file"):
        tmp = dirs[case] = tmp_path_factory.mktemp(case)
        (tmp / "afile").write_text("x")
        if case == "output-dir-file":
            calls[case] = (["run", suite(tmp, out=tmp / "afile")], {"env": henv})
        else:
            target = tmp / "afile" if case == "run-dir-file" else tmp / "afile" / "run"
            calls[case] = (["run", suite(tmp), "--run-dir", target], {"env": henv})
    results = run_batch(calls)
    return {case: (res, dirs.get(case)) for case, res in results.items()}


@pytest.mark.parametrize("case", cases(UNREADABLE))
def test_unreadable_suite_files(path_results, case):
    check(path_results[case][0], 1, "s.toml", *UNREADABLE[case][1])


def test_non_utf8_suite_is_refused_by_run(path_results):
    check(path_results["run-non-utf8"][0], 1, "s.toml", "line 1: not UTF-8 text (byte 0xe9)")


def test_output_dir_that_is_a_file_is_refused_by_run_too(path_results):
    res, tmp = path_results["output-dir-file"]
    check(res, 1, "output_dir", "is a file")
    assert (tmp / "afile").read_text() == "x"


def test_unavailable_plugin_whose_availability_check_raises(tmp_path, henv):
    check(run_cli("validate", suite(tmp_path, backbone='plugin = "hostile/availability_raises"'), env=henv), 0)
    res = run_cli("run", suite(tmp_path, backbone='plugin = "hostile/availability_raises"'), env=henv)
    check(
        res, 1, "hostile/availability_raises is unavailable: availability check failed: RuntimeError: planted failure"
    )
    assert not (tmp_path / "runs").exists()


# --- 3. command options: exit 1 naming the option -------------------------------------------------
OPTIONS = {  # case -> (arguments, run in a folder holding "afile"; what the message says)
    "bench-batch-0": (
        ["bench", "torch/mobilenet_v2", "--batch-sizes", "0"],
        ["--batch-sizes '0': write positive integers"],
    ),
    "bench-input-0x0": (
        ["bench", "torch/mobilenet_v2", "--input", "0x0"],
        ["input size '0x0': each side must be between 32 and 2048"],
    ),
    "bench-input-text": (["bench", "torch/mobilenet_v2", "--input", "big"], ["input size 'big': write HEIGHTxWIDTH"]),
    "bench-device": (["bench", "torch/mobilenet_v2", "--device", "tpu"], ["--device 'tpu': choose cpu or cuda"]),
    "bench-output-dir": (["bench", "torch/mobilenet_v2", "-o", "."], ["--output . is a folder", "bench.csv"]),
    "bench-no-bench-steps": (
        ["bench", "hostile/centroid"],
        ["hostile/centroid: this plugin does not implement bench_steps()"],
    ),
    "describe-cutoff": (
        ["backbones", "describe", "keras/vgg19", "--cutoff", "100000"],
        ["cutoff: 100000 is beyond the depth"],
    ),
    "describe-check-raises": (
        ["backbones", "describe", "hostile/check_raises"],
        ["hostile/check_raises failed in check_options"],
    ),
    "export-to-file": (["data", "export", "synthetic", "--to", "afile"], ["afile is a file"]),
    "fetch-unknown": (["data", "fetch", "nope"], ["unknown data source(s) nope; available: cohen, kermany"]),
    "weights-unknown": (["weights", "fetch", "nope/net"], ["unknown backbone plugin 'nope/net'"]),
    "report-missing": (["report", "missing-run"], ["missing-run: no such run directory"]),
    "report-not-a-run": (["report", "."], ["not a benchbox run (no manifest.json)"]),
    "leaderboard-not-a-run": (["leaderboard", "."], ["no leaderboard entries", "not a benchbox run"]),
}


@pytest.fixture(scope="module")
def option_results(tmp_path_factory, henv):
    cwd = tmp_path_factory.mktemp("options")
    (cwd / "afile").write_text("x")
    results = run_batch({case: (args, {"env": henv, "cwd": cwd}) for case, (args, _) in OPTIONS.items()})
    return results, cwd


@pytest.mark.parametrize("case", cases(OPTIONS, {"describe-cutoff": needs_keras}))
def test_bad_command_options(option_results, case):
    results, cwd = option_results
    check(results[case], 1, *OPTIONS[case][1])
    assert sorted(p.name for p in cwd.iterdir()) == ["afile"]  # nothing written


ON_FINISHED = {  # case -> (arguments, what the message says); {run}: a finished run, {tmp}: a scratch folder
    "report-o-dir": (
        ["report", "{run}", "-o", "{tmp}"],
        ["--output {tmp} is a folder; name a file, e.g. {tmp}/report.md"],
    ),
    "report-o-missing": (
        ["report", "{run}", "-o", "{tmp}/missing/dir/x.md"],
        ["folder {tmp}/missing/dir does not exist"],
    ),
    "report-format": (
        ["report", "{run}", "--format", "pdf"],
        ["--format 'pdf': choose one of terminal, markdown, csv, latex"],
    ),
    "leaderboard-o-missing": (
        ["leaderboard", "{run}", "-o", "{tmp}/missing/dir/x"],
        ["--output {tmp}/missing/dir/x: folder {tmp}/missing/dir does not exist; create it first"],
    ),
    "leaderboard-o-dir": (
        ["leaderboard", "{run}", "-o", "{tmp}"],
        ["is a folder; name a file, e.g. {tmp}/leaderboard.md"],
    ),
    "leaderboard-metric": (
        ["leaderboard", "{run}", "--metric", "nope"],
        ["--metric 'nope': the runs' evaluators declare accuracy_3class"],
    ),
    "leaderboard-dataset": (
        ["leaderboard", "{run}", "--dataset", "nope"],
        ["--dataset 'nope': no entry of that data set", "syn"],
    ),
    "leaderboard-format": (
        ["leaderboard", "{run}", "--format", "pdf"],
        ["--format 'pdf': choose one of markdown, csv, html, json"],
    ),
    "compare-unknown": (["compare", "{run}", "c", "zz"], ["no records for backbone 'zz'; backbones in this run: c"]),
    "run-executor": (["run", "{tmp}/s.toml", "--executor", "cloud"], ["--executor 'cloud': choose local or ray"]),
    "run-cpus": (["run", "{tmp}/s.toml", "--cpus-per-fold", "-1"], ["--cpus-per-fold must not be negative"]),
}


@pytest.fixture(scope="module")
def on_finished_results(tmp_path_factory, henv, finished):
    tmp = tmp_path_factory.mktemp("on-finished")
    suite(tmp, name="s")
    before = sorted(p.name for p in tmp.iterdir())
    fill = {"run": str(finished), "tmp": str(tmp)}
    calls = {case: ([a.format(**fill) for a in args], {"env": henv}) for case, (args, _) in ON_FINISHED.items()}
    return run_batch(calls), fill, before, tmp


@pytest.mark.parametrize("case", cases(ON_FINISHED))
def test_bad_options_on_a_finished_run(on_finished_results, case):
    results, fill, before, tmp = on_finished_results
    check(results[case], 1, *[n.format(**fill) for n in ON_FINISHED[case][1]])
    assert sorted(p.name for p in tmp.iterdir()) == before  # nothing written, no run started


# --- 4. a backbone's output: checked before anything is stored ------------------------------------
PREDICT = "hostile/centroid (predict on syn x {cell} fold 0) returned"
BAD_OUTPUT = {  # hostile/centroid's mode -> what the harness says (fold 0 has 10 test images of 3 classes)
    "nan": f"{PREDICT} non-finite probabilities (NaN or inf) in 1 of 10 rows",
    "shape": f"{PREDICT} probabilities of shape (10, 2); expected (10, 3)",
    "rows": f"{PREDICT} probabilities of shape (9, 3); expected (10, 3)",
    "negative": f"{PREDICT} probabilities outside [0, 1]",
    "sum": f"{PREDICT} probability rows that do not sum to one",
    "text": f"{PREDICT} probabilities that are not numbers",
    "info": "hostile/centroid returned info of type str on syn x {cell} fold 0; return a dict",
    "fit_raises": "hostile/centroid failed in fit on syn x {cell} fold 0: RuntimeError: planted failure in fit",
    "predict_raises": "hostile/centroid failed in predict on syn x {cell} fold 0: ValueError: planted failure in predict",
}


@pytest.fixture(scope="module")
def bad_output_run(tmp_path_factory, henv):
    """One run with a well-behaved cell and one cell per kind of bad output (each its own backbone)."""
    tmp = tmp_path_factory.mktemp("bad-output")
    cells = "\n".join(f'[backbones.{m}]\nplugin = "hostile/centroid"\nmode = "{m}"\n' for m in BAD_OUTPUT)
    res = run_cli("run", suite(tmp, backbone=f"{CENTROID}\n\n{cells}"), env=henv)
    return res, only_run(tmp / "runs")


@pytest.mark.parametrize("mode", list(BAD_OUTPUT))
def test_bad_backbone_output_stores_nothing_and_names_the_fold(bad_output_run, mode):
    res, run_dir = bad_output_run
    check(
        res,
        1,
        BAD_OUTPUT[mode].format(cell=mode),
        "fold(s) failed or were skipped",
        "rerun the same command to retry them",
    )
    assert not list((run_dir / "folds").glob(f"syn__{mode}__*.json"))  # nothing stored from bad output
    failed = json.loads((run_dir / "failed" / f"syn__{mode}__fold00.json").read_text())
    assert failed["fold"] == 0 and "hostile/centroid" in failed["error"]
    skipped = json.loads((run_dir / "failed" / f"syn__{mode}__fold01.json").read_text())
    assert skipped["error"].startswith("skipped: an earlier fold of this cell failed")  # retried by the next run
    if mode.endswith("raises"):
        assert "planted failure" in (run_dir / "benchbox.log").read_text()  # the traceback is kept


def test_good_cell_beside_bad_ones_is_stored_and_reported(bad_output_run):
    res, run_dir = bad_output_run
    check(res, 1, "Acc 3-class", f"run directory: {run_dir}")
    assert records(run_dir) == [f"syn__c__fold{f:02d}.json" for f in range(3)]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "incomplete" and len(manifest["failed_units"]) == 3 * len(BAD_OUTPUT)
    assert not (run_dir / ".lock").exists()
    assert "3/3" in (run_dir / "report.md").read_text()


def test_nan_then_wrong_shape_then_fixed_resumes_the_same_run_to_a_clean_table(tmp_path, henv):
    path = suite(tmp_path)
    run_dir = tmp_path / "runs" / "the-run"
    for mode in ("nan", "shape"):  # the plugin returns NaN; then, "fixed" badly, the wrong shape
        res = run_cli("run", path, "--run-dir", run_dir, env={**henv, "HOSTILE_MODE": mode})
        check(res, 1, BAD_OUTPUT[mode].format(cell="c"), "no fold finished", "rerun the same command to resume")
        assert records(run_dir) == []
    res = run_cli("run", path, "--run-dir", run_dir, env=henv)  # the plugin is fixed
    out = check(res, 0, "3/3", "Acc 3-class", f"run directory: {run_dir}")
    assert "failed" not in out and "warning" not in out
    assert records(run_dir) == [f"syn__c__fold{f:02d}.json" for f in range(3)]  # every fold, once
    assert not list((run_dir / "failed").glob("*.json"))
    report = (run_dir / "report.md").read_text()
    assert "Problems" not in report and "| syn " in report
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "complete"


def test_verbose_shows_the_plugin_traceback(tmp_path, henv):
    res = run_cli("--verbose", "run", suite(tmp_path), env={**henv, "HOSTILE_MODE": "fit_raises"})
    assert res.returncode == 1
    out = res.stdout + res.stderr
    assert "traceback of syn x c fold 0:" in out and "Traceback (most recent call last)" in out
    assert 'raise RuntimeError("planted failure in fit")' in out


# --- 5. other plugin faults ------------------------------------------------------------------------
def test_dataset_whose_samples_raise_does_not_break_describe_of_the_others(henv):
    out = check(
        run_cli("data", "describe", env=henv),
        0,
        "synthetic: 120 images",
        "hostile-samples: unavailable here — hostile failed in samples on data set hostile-samples: "
        "KeyError: 'planted failure in samples'",
        "hostile-junk: unavailable here",
        "returned dict from samples()",
    )
    assert "[/]hostile" in out  # a source name that is rich markup is printed as it is
    check(run_cli("data", "describe", "hostile-samples", env=henv), 1, "could not describe hostile-samples")


DATA_FAULTS = {  # case -> (the [datasets.syn] table, what the message says)
    "samples-raises": (
        'plugin = "hostile-samples"',
        ["hostile-samples failed in samples on data set syn: KeyError: 'planted failure in samples'"],
    ),
    "samples-junk": ('plugin = "hostile-junk"', ["dataset plugin hostile-junk returned dict for syn", "SampleSet"]),
    "load-wrong-shape": (
        'plugin = "hostile-load"',
        ["data set syn: load() returned uint8 (12, 3); expected uint8 (12, 32, 32)"],
    ),
    "synthetic-images-0": (
        SYNTHETIC.replace("images = 30", "images = 0"),
        ["datasets.syn: images: must be at least patients (12), each patient has an image; got 0"],
    ),
    "positive-class": (
        SYNTHETIC + '\npositive_class = "healthy"',
        ["datasets.syn: positive_class: must be one of covid, pneumonia, normal, got 'healthy'"],
    ),
}


@pytest.fixture(scope="module")
def data_fault_results(tmp_path_factory, henv):
    dirs = {case: tmp_path_factory.mktemp(case) for case in DATA_FAULTS}
    calls = {
        case: (["run", suite(dirs[case], dataset=table, k=2)], {"env": henv})
        for case, (table, _) in DATA_FAULTS.items()
    }
    return run_batch(calls), dirs


@pytest.mark.parametrize("case", cases(DATA_FAULTS))
def test_data_set_faults_stop_the_run_before_training(data_fault_results, case):
    results, dirs = data_fault_results
    check(results[case], 1, *DATA_FAULTS[case][1])
    runs = dirs[case] / "runs"
    assert not runs.exists() or all(records(r) == [] for r in runs.iterdir())


def test_prepare_that_raises_stops_before_any_data_is_loaded(tmp_path, henv):
    res = run_cli("run", suite(tmp_path, backbone='plugin = "hostile/prepare_raises"'), env=henv)
    check(res, 1, "cannot start the run", "hostile/prepare_raises failed in prepare on backbones.c: OSError: planted")
    assert not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def views_fault_run(tmp_path_factory, henv):
    """A good run whose views meet an evaluator that raises everywhere, a metric label matplotlib cannot
    draw, and a report-sections hook that raises."""
    tmp = tmp_path_factory.mktemp("views-faults")
    path = suite(tmp, evaluators='["paper", "hostile-eval", "hostile-label"]')
    res = run_cli("run", path, env={**henv, "HOSTILE_HOOK": "sections"})
    return res, only_run(tmp / "runs")


def test_evaluator_that_raises_leaves_the_other_metrics(views_fault_run, henv):
    res, run_dir = views_fault_run
    needles = [
        "evaluator 'hostile-eval'",
        "failed on syn x c: ZeroDivisionError: planted failure in evaluate",
        "failed to build its report sections: RuntimeError",
        "failed to draw its plots: RuntimeError",
    ]
    check(res, 0, "Acc 3-class", *needles)
    report = (run_dir / "report.md").read_text()
    assert "Acc 3-class" in report and "planted failure in evaluate" in report
    assert len(records(run_dir)) == 3
    env = {**henv, "HOSTILE_HOOK": "sections"}  # as the run had it
    check(run_cli("report", run_dir, "-f", "markdown", env=env), 0, "| Acc 3-class", *needles)


def test_plot_that_cannot_be_drawn_does_not_stop_the_views(views_fault_run):
    res, run_dir = views_fault_run
    check(res, 0, "Acc 3-class", "plots of syn were not drawn: ValueError")
    report = (run_dir / "report.md").read_text()
    assert "plots of syn were not drawn" in report and "<b>" not in report and "&lt;b&gt;odd&lt;/b&gt;" in report


def test_report_sections_hook_that_raises_is_a_warning(views_fault_run):
    res, run_dir = views_fault_run
    check(
        res,
        0,
        "Acc 3-class",
        "plugin hostile failed in benchbox_report_sections: RuntimeError: planted failure in report_sections",
    )
    assert "planted failure in report_sections" in (run_dir / "report.md").read_text()


def test_lifecycle_hook_that_raises_stops_the_run_and_keeps_the_fold(tmp_path, henv):
    path = suite(tmp_path)
    check(
        run_cli("run", path, env={**henv, "HOSTILE_HOOK": "fold_end"}),
        1,
        "plugin hostile failed in benchbox_fold_end: RuntimeError: planted failure in fold_end",
    )
    run_dir = only_run(tmp_path / "runs")
    assert records(run_dir) == ["syn__c__fold00.json"]  # written before the hook ran; it stays
    assert not (run_dir / ".lock").exists()
    check(run_cli("run", path, env=henv), 0, "resuming", "3/3")
    assert len(records(run_dir)) == 3


@pytest.fixture(scope="module")
def broken_envs(tmp_path_factory, henv):
    """For each broken plugin: an environment that sees it beside the hostile plugin."""
    envs = {}
    for kind, (source, _) in BROKEN.items():
        site = plugin_site(tmp_path_factory.mktemp(f"broken-{kind}"), "broken", {kind: source})
        envs[kind] = {**henv, "PYTHONPATH": os.pathsep.join([str(site), henv["PYTHONPATH"]])}
    return envs


@pytest.fixture(scope="module")
def broken_results(broken_envs):
    return run_group({kind: (["plugins"], {"env": env}) for kind, env in broken_envs.items()})


@pytest.mark.parametrize("kind", cases(BROKEN))
def test_broken_plugin_is_named_and_the_others_keep_working(broken_results, kind):
    out = check(broken_results[kind], 1, "broken plugin", BROKEN[kind][1], "synthetic", "hostile/centroid")
    assert "plugin problem(s) above" in out


def test_run_beside_a_plugin_with_a_misspelt_hook_works_with_a_warning(tmp_path, broken_envs):
    check(run_cli("run", suite(tmp_path), env=broken_envs["typo"]), 0, "warning: broken plugin typo", "3/3")


def test_plugin_names_and_descriptions_are_printed_literally(henv):
    out = check(
        run_cli("plugins", env=henv),
        0,
        "closes nothing [/] and [red]colours[/red] nothing",
        "42",
        "hostile/<script>alert(1)</script>",
    )
    assert "hostile/availability_raises" in out and "availability check failed" in out


# --- 6. names that are HTML or markup: escaped in markdown, literal in the terminal ---------------
@pytest.fixture(scope="module")
def named_run(tmp_path_factory, henv):
    tmp = tmp_path_factory.mktemp("named")
    res = run_cli(
        "run",
        suite(tmp, dataset='plugin = "hostile-names"', k=2, backbone='plugin = "hostile/<script>alert(1)</script>"'),
        env=henv,
    )
    return res, only_run(tmp / "runs")


def test_terminal_prints_markup_class_names_literally(named_run):
    res, _ = named_run
    check(res, 0, "[/]normal", "<script>alert(1)</script>")


def test_markdown_report_escapes_html_in_class_names(named_run):
    _, run_dir = named_run
    report = (run_dir / "report.md").read_text()
    assert "<script>" not in report and "&lt;script&gt;alert(1)&lt;/script&gt;" in report


def test_markdown_leaderboard_escapes_html_in_plugin_and_class_names(named_run, henv, finished, tmp_path):
    _, run_dir = named_run
    out = tmp_path / "board.md"
    check(run_cli("leaderboard", run_dir, finished, "-o", out, env=henv), 0, f"wrote {out}")
    board = out.read_text()
    assert "<script>" not in board and "hostile/&lt;script&gt;alert(1)&lt;/script&gt;" in board
    html = run_cli("leaderboard", run_dir, "--format", "html", env=henv)
    assert html.returncode == 0 and "<script>alert" not in html.stdout


# --- 7. run directories that cannot lie ------------------------------------------------------------
def _lock(run_dir: Path, pid: int, host: str | None = None) -> None:
    lock = run_dir / ".lock"
    lock.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "since": "2026-01-01T00:00:00"}))


def _dead_pid() -> int:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid is now free
    return dead.pid


def _foreign(run_dir: Path) -> None:
    rec = run_dir / "folds" / "syn__c__fold01.json"
    rec.write_text(json.dumps({**json.loads(rec.read_text()), "suite_digest": "0123456789abcdef"}))


def _edit(suite_path: Path) -> None:
    suite_path.write_text(suite_path.read_text().replace("epochs = 1", "epochs = 2"))


COPIES = {  # case -> (how the copy of the finished run (or its suite) is changed, command: run or report)
    "locked": (lambda run_dir, path: _lock(run_dir, os.getpid()), "run"),  # this test process: alive
    "locked-elsewhere": (lambda run_dir, path: _lock(run_dir, 1, host="another-host.example"), "run"),
    "lock-of-dead-process": (lambda run_dir, path: _lock(run_dir, _dead_pid()), "run"),
    "lock-damaged": (lambda run_dir, path: (run_dir / ".lock").write_text("[1, 2"), "run"),
    "no-manifest": (lambda run_dir, path: (run_dir / "manifest.json").unlink(), "run"),
    "edited-suite": (lambda run_dir, path: _edit(path), "run"),
    "foreign-record": (lambda run_dir, path: _foreign(run_dir), "run"),
    "split-damaged": (lambda run_dir, path: (run_dir / "splits" / "syn.json").write_text('{"ids": ['), "run"),
    "manifest-not-json": (lambda run_dir, path: (run_dir / "manifest.json").write_text("{"), "report"),
    "manifest-not-object": (lambda run_dir, path: (run_dir / "manifest.json").write_text("[]"), "report"),
    "new-over-a-run": (lambda run_dir, path: None, "run --new"),
}


@pytest.fixture(scope="module")
def on_copies(tmp_path_factory, finished, henv):
    """`benchbox run --run-dir COPY` (or `report COPY`) on copies of the finished run, each changed as
    COPIES says: {case: (result, the copy, its files before the command)}."""
    calls, copies = {}, {}
    for case, (change, command) in COPIES.items():
        tmp = tmp_path_factory.mktemp(case)
        run_dir = tmp / "copy" / finished.name
        shutil.copytree(finished, run_dir)
        path = good_suite(tmp, finished)
        change(run_dir, path)
        before = {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
        args = ["report", run_dir] if command == "report" else ["run", path, "--run-dir", run_dir]
        args += ["--new"] if command == "run --new" else []
        calls[case] = (args, {"env": henv})
        copies[case] = (run_dir, before)
    # one process for all: each command locks (or is refused) the copy it names, and unlocks it when done
    results = run_batch(calls)
    return {case: (results[case], *copies[case]) for case in COPIES}


def unchanged(run_dir: Path, before: dict) -> bool:
    return before == {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


def test_report_without_an_evaluator_the_run_used_leaves_the_report_files_alone(run_copy, henv):
    """Uninstalling a plugin must not make `benchbox report` rewrite the run's report without its columns."""
    manifest = json.loads((run_copy / "manifest.json").read_text())
    manifest["evaluators"] = [*manifest.get("evaluators", ["paper"]), "youden"]  # as if it were uninstalled
    (run_copy / "manifest.json").write_text(json.dumps(manifest))
    views = ["report.html", "report.md", "summary.csv"]
    before = {name: (run_copy / name).read_bytes() for name in views}
    out = check(
        run_cli("report", run_copy, "--format", "markdown", env=henv),
        0,
        "evaluator 'youden' used by this run is not installed",
        "its report files (report.html, report.md, summary.csv, plots/) were left as they are",
    )
    assert out.count(flat("evaluator 'youden' used by this run is not installed")) == 1  # once, not per cell
    assert {name: (run_copy / name).read_bytes() for name in views} == before


def test_run_with_threads_records_them_in_the_manifest(tmp_path, henv):
    check(run_cli("run", suite(tmp_path, name="threads"), "--threads", "3", env=henv), 0)
    manifest = json.loads((only_run(tmp_path / "runs") / "manifest.json").read_text())
    settings = manifest["environment"]["settings"]
    assert settings["OMP_NUM_THREADS"] == "3" and settings["TF_NUM_INTRAOP_THREADS"] == "3"
    assert "load_average" in manifest["environment"]
    check(run_cli("run", suite(tmp_path, name="zero"), "--threads", "0", env=henv), 2, "--threads")


def test_report_takes_the_file_suffix_as_format_name(finished, henv):
    md = check(run_cli("report", finished, "--format", "md", env=henv), 0)
    assert md == check(run_cli("report", finished, "--format", "markdown", env=henv), 0)
    check(run_cli("report", finished, "--format", "docx", env=henv), 1, "choose one of terminal, markdown")


def test_locked_run_dir_is_refused_naming_the_holder(on_copies):
    res, run_dir, before = on_copies["locked"]
    check(res, 1, f"is being written by process {os.getpid()}", "wait for it to finish", str(run_dir / ".lock"))
    assert unchanged(run_dir, before)  # the lock is not taken over, nothing is written


def test_lock_held_on_another_machine_is_respected(on_copies):
    res, run_dir, before = on_copies["locked-elsewhere"]
    check(res, 1, "is being written by process 1 on another-host.example")
    assert unchanged(run_dir, before)


@pytest.mark.parametrize("case", ["lock-of-dead-process", "lock-damaged"])
def test_stale_or_damaged_lock_is_broken(on_copies, case):
    res, run_dir, _ = on_copies[case]
    check(res, 0, "5/5", f"run directory: {run_dir}")
    assert not (run_dir / ".lock").exists()


def test_records_without_manifest_are_refused(on_copies):
    res, run_dir, before = on_copies["no-manifest"]
    check(res, 1, "holds fold records but no manifest.json", "they are not adopted", "Choose another --run-dir")
    assert unchanged(run_dir, before)  # no manifest written over the records


def test_edited_suite_is_refused_on_its_old_run_dir(on_copies):
    res, run_dir, before = on_copies["edited-suite"]
    check(res, 1, "holds a run of a different suite (or an edited one)", "choose another --run-dir")
    assert unchanged(run_dir, before)


def test_new_never_writes_over_the_run_in_its_run_dir(on_copies):
    res, run_dir, before = on_copies["new-over-a-run"]
    check(res, 1, f"--new with --run-dir {run_dir}: that folder already holds a run", f"delete {run_dir}")
    assert unchanged(run_dir, before)  # the finished run's records stay as they were


def test_edited_suite_without_run_dir_starts_anew_and_mentions_the_unfinished_run(tmp_path, henv):
    path = suite(tmp_path)
    check(run_cli("run", path, env={**henv, "HOSTILE_MODE": "fit_raises"}), 1)
    old = only_run(tmp_path / "runs")
    path.write_text(path.read_text().replace("epochs = 1", "epochs = 2"))
    check(
        run_cli("run", path, env=henv),
        0,
        f"note: {old} is an unfinished run of an earlier version of this suite",
        "a new run starts",
    )
    new = [p for p in (tmp_path / "runs").iterdir() if p != old]
    assert len(new) == 1 and len(records(new[0])) == 3 and records(old) == []


def test_record_of_another_suite_is_refused_on_resume_and_skipped_by_report(on_copies, henv):
    res, run_dir, before = on_copies["foreign-record"]
    check(res, 1, "1 fold record(s) were written by another suite", "syn__c__fold01.json")
    assert unchanged(run_dir, before)
    out = check(run_cli("report", run_dir, env=henv), 0, "syn__c__fold01.json: skipped a fold record of another suite")
    assert "4/5" in out


DAMAGE = {  # fold -> (damage, the reason `report` gives)
    0: ("truncated", "Expecting"),
    1: ("nan", "non-finite probabilities"),
    2: ("list", "a JSON list, not a record"),
    3: ("wrong-labels", "true labels outside the class list"),
}


@pytest.fixture(scope="module")
def damaged_run(tmp_path_factory, finished, henv):
    """A copy of the finished run with folds 0-3 damaged in four ways (fold 4 intact), and its report."""
    run_dir = tmp_path_factory.mktemp("damaged") / finished.name
    shutil.copytree(finished, run_dir)
    for fold, (damage, _) in DAMAGE.items():
        rec = run_dir / "folds" / f"syn__c__fold{fold:02d}.json"
        text = rec.read_text()
        data = json.loads(text)
        if damage == "truncated":
            rec.write_text(text[: len(text) // 2])
        elif damage == "nan":
            data["probabilities"][0][0] = float("nan")
            rec.write_text(json.dumps(data))
        elif damage == "list":
            rec.write_text("[]")
        else:
            data["y_true"] = [7] * len(data["y_true"])
            rec.write_text(json.dumps(data))
    return run_cli("report", run_dir, "-f", "markdown", env=henv), run_dir


@pytest.mark.parametrize("fold", list(DAMAGE), ids=[d for d, _ in DAMAGE.values()])
def test_damaged_record_is_skipped_by_the_views(damaged_run, fold):
    res, run_dir = damaged_run
    out = check(
        res,
        0,
        f"syn__c__fold{fold:02d}.json: skipped a damaged fold record ({DAMAGE[fold][1]}",
        "folds [0, 1, 2, 3] missing (1/5 done)",
    )
    assert "| syn " in out  # the intact fold is still reported


def test_damaged_records_are_redone_by_run(damaged_run, finished, henv, tmp_path):
    _, run_dir = damaged_run
    check(run_cli("run", good_suite(tmp_path, finished), "--run-dir", run_dir, env=henv), 0, "5/5")
    for fold in range(5):
        data = json.loads((run_dir / "folds" / f"syn__c__fold{fold:02d}.json").read_text())
        assert data["fold"] == fold and None not in data["probabilities"][0]  # redone whole


def test_leaderboard_ranks_good_runs_beside_a_damaged_one(tmp_path, henv, finished, run_copy):
    for rec in (run_copy / "folds").glob("*.json"):
        data = json.loads(rec.read_text())
        data["probabilities"] = [[float("nan")] * 3] * len(data["y_true"])
        rec.write_text(json.dumps(data))
    check(
        run_cli("leaderboard", finished, run_copy, env=henv),
        0,
        "hostile/centroid",
        finished.name,
        f"warning: {run_copy}: no usable fold records",
    )


def test_leaderboard_notes_a_run_started_on_a_busy_machine(henv, run_copy):
    manifest = json.loads((run_copy / "manifest.json").read_text())
    env = manifest["environment"]
    env.update(load_average=3.5, cpu_count=2, settings={})  # default thread pools, 2 cores, load 3.5
    (run_copy / "manifest.json").write_text(json.dumps(manifest))
    out = run_cli("leaderboard", run_copy, "--format", "csv", env=henv)
    check(out, 0, "started on a busy machine (load 3.5, 2 cores): its timings are not comparable")
    env["settings"] = {"OMP_NUM_THREADS": "1"}  # --threads 1: the run chose its pools, no note
    (run_copy / "manifest.json").write_text(json.dumps(manifest))
    assert flat("busy machine") not in check(run_cli("leaderboard", run_copy, "--format", "csv", env=henv), 0)


def test_leaderboard_notes_an_incomplete_run(tmp_path, henv, finished, run_copy):
    (run_copy / "folds" / "syn__c__fold01.json").unlink()
    check(run_cli("leaderboard", finished, run_copy, env=henv), 0, "incomplete: 4/5 folds")


@pytest.mark.parametrize(
    "case, needle",
    [
        ("manifest-not-json", "manifest.json: unreadable manifest"),
        ("manifest-not-object", "manifest.json: not a benchbox run manifest"),
        ("split-damaged", "splits/syn.json is damaged"),
    ],
)
def test_damaged_run_files_are_named(on_copies, case, needle):
    res, run_dir, before = on_copies[case]
    check(res, 1, needle)
    assert unchanged(run_dir, before)


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_run_dir_that_is_or_lies_under_a_file(path_results, where):
    res, tmp = path_results[f"run-dir-{where}"]
    check(res, 1, "--run-dir", f"{tmp / 'afile'} is a file")
    assert (tmp / "afile").read_text() == "x" and not (tmp / "runs").exists()


def test_run_store_files_are_readable_by_others_under_umask_022(tmp_path, henv):
    old = os.umask(0o022)
    try:
        check(run_cli("run", suite(tmp_path), env=henv), 0)
    finally:
        os.umask(old)
    run_dir = only_run(tmp_path / "runs")
    paths = [run_dir, *run_dir.rglob("*")]
    assert any(p.name == "syn__c__fold00.json" for p in paths) and any(p.suffix == ".png" for p in paths)
    for p in paths:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o755 if p.is_dir() else 0o644), f"{p}: {oct(mode)}"


# --- 8. images, data files and weights -------------------------------------------------------------
def _jpegs(root: Path) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, level in (("a", 60), ("b", 190)):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            pixels = np.clip(level + rng.normal(0, 20, (40, 40)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / cls / f"p{cls}{i}_1.jpg", quality=90)
    return root


FOLDER = 'plugin = "folder"\nroot = "{root}"\ngroup_pattern = \'(p[ab]\\d+)_\'\nskip_unreadable = {skip}'


def _csv_not_utf8(root: Path) -> str:
    rows = [b"path,label,patient"]
    rows += [f"{p.relative_to(root)},{p.parent.name},{p.stem}".encode() for p in sorted(root.rglob("*.jpg"))]
    rows[2] += b"\xe9"  # a Latin-1 patient id on line 3
    (root / "labels.csv").write_bytes(b"\n".join(rows) + b"\n")
    return f'plugin = "csv"\nfile = "{root / "labels.csv"}"'


USER_DATA = {  # case -> the [datasets.imgs] table for a folder of 12 JPEGs in classes a and b
    "truncated-skipped": lambda root: FOLDER.format(root=_truncate(root), skip="true"),
    "truncated-not-skipped": lambda root: FOLDER.format(root=_truncate(root), skip="false"),
    "folder-missing-root": lambda root: FOLDER.format(root=root / "nowhere", skip="false"),
    "folder-one-class": lambda root: FOLDER.format(root=shutil.rmtree(root / "b") or root, skip="false"),
    "csv-not-utf8": _csv_not_utf8,
}


def _truncate(root: Path) -> Path:
    bad = root / "a" / "pa0_1.jpg"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # Pillow's verify() passes it; decoding does not
    return root


@pytest.fixture(scope="module")
def user_data_results(tmp_path_factory, henv):
    calls, dirs = {}, {}
    for case, table in USER_DATA.items():
        tmp = dirs[case] = tmp_path_factory.mktemp(case)
        dataset = table(_jpegs(tmp / "imgs"))
        calls[case] = (["run", suite(tmp, alias="imgs", k=2, dataset=dataset)], {"env": henv})
    results = run_batch(calls)
    return {case: (results[case], dirs[case]) for case in USER_DATA}


def test_truncated_jpeg_is_skipped_with_skip_unreadable(user_data_results):
    res, tmp = user_data_results["truncated-skipped"]
    check(res, 0, "skipped 1 unreadable image(s) (skip_unreadable = true): a/pa0_1.jpg", "truncated")
    run_dir = only_run(tmp / "runs")
    ids = [i for p in (run_dir / "folds").glob("*.json") for i in json.loads(p.read_text())["test_ids"]]
    assert len(ids) == 11 and not any("pa0_1" in i for i in ids)


@pytest.mark.parametrize(
    "case, needles",
    [
        ("truncated-not-skipped", ["cannot decode image", "pa0_1.jpg", "truncated", "set skip_unreadable = true"]),
        ("folder-missing-root", ["folder failed in samples on data set imgs: root = ", "does not exist"]),
        ("folder-one-class", ["has 1 class(es) (a); a classifier needs at least 2"]),
        ("csv-not-utf8", ["is not UTF-8: line(s) 3", "Save the file as UTF-8"]),
    ],
)
def test_user_data_problems_are_named(user_data_results, case, needles):
    res, tmp = user_data_results[case]
    check(res, 1, *needles)
    runs = tmp / "runs"
    assert not runs.exists() or all(records(r) == [] for r in runs.iterdir())


def test_cohen_metadata_that_is_not_utf8_is_reported_with_its_line(tmp_path, henv):
    base = tmp_path / "data" / "covid-chestxray-dataset"
    (base / "images").mkdir(parents=True)
    lines = [b"patientid,finding,filename,modality,view,folder"]
    for i in range(4):
        (base / "images" / f"c{i}.png").write_bytes(b"")
        patient = b"Jos\xe9" if i == 1 else f"p{i}".encode()
        lines.append(patient + f",Pneumonia/Viral/COVID-19,c{i}.png,X-ray,PA,images".encode())
    (base / "metadata.csv").write_bytes(b"\n".join(lines) + b"\n")
    out = check(
        run_cli("data", "describe", "cohen", "--data-dir", tmp_path / "data", env=henv),
        0,
        "line(s) 3 are not UTF-8 and were read as Latin-1",
        "check the patient ids",
    )
    assert "\ufffd" not in out


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch not installed")
def test_garbage_weights_file_is_found_before_any_data_is_loaded(tmp_path, henv):
    weights = tmp_path / "garbage.pth"
    weights.write_bytes(random.Random(14).randbytes(2000))
    backbone = f'plugin = "torch/mobilenet_v2"\nweights = "{weights}"\ninput_size = [48, 48]'
    res = run_cli("run", suite(tmp_path, backbone=backbone), env=henv)
    out = check(res, 1, "cannot start the run", f"cannot read weights file {weights}", "not a PyTorch state dict")
    assert "weights_only` set to `False`" not in out  # torch's advice to load it unsafely is not passed on
    assert not (tmp_path / "runs").exists()  # no run directory, no folds


# --- 9. Ctrl-C and SIGKILL -----------------------------------------------------------------------------
def test_ctrl_c_says_what_was_kept_and_how_to_resume(tmp_path, henv, start_cli):
    path = suite(tmp_path)
    proc = start_cli("run", path, env={**henv, "HOSTILE_SLEEP": "2"})
    folds = tmp_path / "runs"
    wait_for(lambda: list(folds.glob("*/folds/*.json")), what="a first fold")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in out + err
    run_dir = only_run(folds)
    kept = len(records(run_dir))
    assert 0 < kept < 3
    assert f"interrupted: {kept} finished fold(s) are kept in {run_dir}" in flat(err)
    assert f"rerun `benchbox run {path}`" in flat(err)
    assert not (run_dir / ".lock").exists()
    check(run_cli("run", path, env=henv), 0, f"resuming unfinished run {run_dir}", "3/3")
    assert len(records(run_dir)) == 3


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(tmp_path, example_env, start_cli):
    """Killed with SIGKILL at seeded random moments (three kills at most), then resumed: every fold
    is stored exactly once and the results equal those of a run that was never interrupted."""
    import pandas as pd

    def pixel_suite(name):
        return suite(
            tmp_path,
            name=name,
            k=4,
            out=tmp_path / name,
            backbone='plugin = "example/pixel_logreg"',
            dataset='plugin = "synthetic"\nimages = 40\npatients = 16',
        )

    reference = pixel_suite("reference")
    check(run_cli("run", reference, env=example_env), 0)
    victim = pixel_suite("victim")
    run_dir = tmp_path / "victim" / "run"
    rng = random.Random(14)
    kills = []  # (folds stored when the kill was sent, status then)
    for _ in range(3):
        # a random moment: once the run directory exists and a random number of folds (0-3) is stored,
        # plus a random fraction of a fold's time (a fold takes ~0.1 s: the kill lands mid-fold or mid-write)
        want = rng.randint(0, 3)
        proc = start_cli("run", victim, "--run-dir", run_dir, env=example_env)

        def reached(proc=proc, want=want):
            return proc.poll() is not None or ((run_dir / "manifest.json").exists() and len(records(run_dir)) >= want)

        wait_for(reached, what="the chosen moment")
        time.sleep(rng.uniform(0, 0.15))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills.append(len(records(run_dir)))
        proc.communicate(timeout=300)
        if json.loads((run_dir / "manifest.json").read_text()).get("status") == "complete":
            break
    res = run_cli("run", victim, "--run-dir", run_dir, env=example_env)
    check(res, 0, "4/4")
    assert kills, "no kill landed before the run finished"
    assert records(run_dir) == [f"syn__c__fold{f:02d}.json" for f in range(4)]
    assert not list(run_dir.rglob("*.tmp")) and not (run_dir / ".lock").exists()

    timing = ["train_seconds", "infer_images_per_sec"]
    got = pd.read_csv(run_dir / "summary.csv").drop(columns=timing)
    want = pd.read_csv(only_run(tmp_path / "reference") / "summary.csv").drop(columns=timing)
    pd.testing.assert_frame_equal(got, want)
    for fold in range(4):  # the stored predictions too, fold by fold
        name = f"syn__c__fold{fold:02d}.json"
        a = json.loads((run_dir / "folds" / name).read_text())
        b = json.loads((only_run(tmp_path / "reference") / "folds" / name).read_text())
        assert a["test_ids"] == b["test_ids"] and a["probabilities"] == b["probabilities"]
