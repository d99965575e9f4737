"""benchmarks/gpu_study.py, rehearsed on the CPU at 2% of the study's size (issue 15): the script that
is meant to run once on a GPU machine must run end to end here, and write what it promises."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from conftest import HAS_KERAS, HAS_TORCH, ROOT

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not HAS_TORCH, reason="PyTorch not installed")]


def run_script(out, frameworks: str, *flags):
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_study.py"), "--device", "cpu", "--scale", "0.02",
         "--out", str(out), "--frameworks", frameworks, "--networks", "mobilenet_v2", *flags],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]


def test_the_gpu_script_runs_on_the_cpu_at_reduced_size(tmp_path):
    frameworks = "torch,keras" if HAS_KERAS else "torch"
    # one of the five networks keeps the rehearsal inside the suite's time budget (two took 14 min on a
    # loaded 2-core machine); the five-network rehearsal is the same command without --networks. The
    # study runs in both engines; the throughput part (the same loop for each engine) in PyTorch only:
    # Keras's bench, fp32 and mixed, cost ~60 s of CPU here in two TensorFlow processes, and its steps are
    # checked in-process (tests/test_keras_backends.py, mixed precision)
    run_script(tmp_path, frameworks, "--skip-bench")
    run_script(tmp_path, "torch", "--skip-study")
    bench = list(csv.DictReader((tmp_path / "bench.csv").open()))
    # the backbone at batch 1 and the training batch, in fp32 and mixed precision
    assert {(r["model"], r["amp"], r["infer_batch_size"]) for r in bench} == {
        ("torch/mobilenet_v2", amp, bs) for amp in ("False", "True") for bs in ("1", "6")
    }  # fmt: skip
    assert all(float(r["infer_samples_per_sec"]) > 0 and float(r["train_samples_per_sec"]) > 0 for r in bench)
    study = list(csv.DictReader((tmp_path / "study.csv").open()))
    cells = {(r["engine"], r["dataset"], r["backbone"]) for r in study}
    for e in frameworks.split(","):  # the study's design: Dataset_1 x every network, Dataset_2 x MobileNet v2
        assert {(e, "dataset_1", "mobilenet_v2"), (e, "dataset_2", "mobilenet_v2")} <= cells
    assert all(int(r["folds"]) == 2 and float(r["cell_seconds"]) > 0 for r in study)
    table = (tmp_path / "study.md").read_text()
    assert "| torch | dataset_2 | mobilenet_v2 | 2 |" in table and "device cpu" in table
