"""The real `benchbox` command, end to end, on the synthetic data set."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (
    KERAS_MNV2,
    TORCH_MNV2,
    needs_keras,
    needs_torch,
    run_batch,
    run_cli,
    tiny_suite,
    write_suite,
)


def records_of(run_dir: Path):
    return sorted(json.loads(p.read_text())["fold"] for p in (run_dir / "folds").glob("*.json"))


@pytest.mark.slow
@needs_keras
@needs_torch
def test_run_both_frameworks_prints_table_and_writes_files(tmp_path):
    suite = tiny_suite(tmp_path, KERAS_MNV2 + TORCH_MNV2)
    suite.write_text(suite.read_text().replace("k = 3", "k = 2"))  # Keras traces each fold's model: keep it short
    res = run_cli("run", suite)
    assert res.returncode == 0, res.stderr + res.stdout
    assert "k-mnv2" in res.stdout and "t-mnv2" in res.stdout and "Sensitivity" in res.stdout
    assert "Confusion matrix" in res.stdout
    for noise in ("absl::InitializeLog", "oneDNN custom operations", "I0000 "):  # framework C++ logs stay quiet
        assert noise not in res.stdout + res.stderr, noise
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert len(list((run_dir / "folds").glob("*.json"))) == 4
    report = (run_dir / "report.md").read_text()
    assert "| syn " in report and "actual covid" in report
    rec = json.loads(next((run_dir / "folds").glob("syn__t-mnv2__*.json")).read_text())
    probs = rec["probabilities"]
    assert len(probs) == len(rec["y_true"]) and all(abs(sum(p) - 1) < 1e-6 for p in probs)
    assert rec["info"]["params_frozen"] > 0

    formats = {"markdown": "| Data ", "csv": "dataset,probe,data,backbone,plugin", "latex": "\\toprule"}
    reports = run_batch({fmt: (["report", run_dir, "--format", fmt], {}) for fmt in formats})  # one process
    for fmt, marker in formats.items():
        assert reports[fmt].returncode == 0 and marker in reports[fmt].stdout, reports[fmt].stderr


@pytest.mark.slow
@needs_torch
def test_killed_run_resumes_with_every_fold_exactly_once(tmp_path):
    suite = tiny_suite(tmp_path, TORCH_MNV2.replace("[48, 48]", "[64, 64]"), name="killme")
    text = suite.read_text().replace("k = 3", "k = 4").replace("epochs = 1", "epochs = 3")
    suite.write_text(text)
    exe = Path(sys.executable).with_name("benchbox")
    proc = subprocess.Popen([str(exe), "run", str(suite)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folds_dir = None
    deadline = time.time() + 900
    while time.time() < deadline:
        runs = list((tmp_path / "runs").glob("killme-*/folds/*.json"))
        if runs:
            folds_dir = runs[0].parent
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert folds_dir is not None, "no fold finished before the deadline"
    finished = {p.name: p.read_text() for p in folds_dir.glob("*.json")}
    assert 0 < len(finished) < 4, "the run was not interrupted mid-way"

    res = run_cli("run", suite)
    assert res.returncode == 0, res.stderr
    assert "resuming" in res.stdout
    assert records_of(folds_dir.parent) == [0, 1, 2, 3]
    for name, text in finished.items():  # finished folds were not redone
        assert (folds_dir / name).read_text() == text
    assert len(list((tmp_path / "runs").iterdir())) == 1


def test_errors_are_one_message_without_traceback(tmp_path):
    bad = write_suite(tmp_path / "bad.toml", 'name = "x"\n[datasets.a]\nplugin = "nope"\n')
    res = run_cli("validate", bad)
    assert res.returncode == 1
    assert "unknown dataset plugin 'nope'" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("report", tmp_path)
    assert res.returncode == 1 and "not a benchbox run" in res.stderr and "Traceback" not in res.stderr


@needs_torch
def test_validate_and_plugins_commands(tmp_path):
    """The commands, end to end. (The shipped suites, the quick start's among them, are validated in-process
    by test_suite_validation.py: its Keras checks import TensorFlow, ~12 s of a fresh process.)"""
    res = run_cli("validate", tiny_suite(tmp_path, TORCH_MNV2))
    assert res.returncode == 0 and "valid" in res.stdout and "t-mnv2 (torch/mobilenet_v2)" in res.stdout
    res = run_cli("plugins")
    assert res.returncode == 0
    for name in ("synthetic", "keras/mobilenet_v2", "torch/mobilenet_v2", "paper"):
        assert name in res.stdout


def test_help_on_every_command(capsys):
    """`benchbox --help` from the installed script; each command's help through the same entry point in
    this process (a `benchbox` process costs ~1 s of CPU to start)."""
    from benchbox.cli import main

    res = run_cli("--help")
    assert res.returncode == 0 and "Usage" in res.stdout
    for args in (
        ["run", "--help"],
        ["validate", "--help"],
        ["report", "--help"],
        ["plugins", "--help"],
        ["backbones", "describe", "--help"],
    ):
        with pytest.raises(SystemExit) as exit_:
            main(args)
        assert exit_.value.code in (0, None) and "Usage" in capsys.readouterr().out, args


def test_help_keeps_words_in_square_brackets_and_shows_flags_plainly():
    res = run_cli("validate", "--help")
    assert res.returncode == 0 and "<bool>" not in res.stdout
    res = run_cli("explain", "--help")
    assert "[explain]" in res.stdout  # "A run directory written by `benchbox run` with [explain] in its suite."
