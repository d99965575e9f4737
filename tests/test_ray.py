"""The Ray executor on a local Ray instance started by the test (2 CPUs, loopback only)."""

import importlib.util
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TORCH_MNV2, file_lock, needs_torch, run_batch, run_cli, shared_root, tiny_suite

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("ray") is None, reason="Ray not installed (pip install 'benchbox[ray]')"
    ),
    needs_torch,
]
RAY = ["--executor", "ray", "--ray-local-cpus", "2"]


@pytest.fixture(autouse=True)
def one_ray_at_a_time(tmp_path_factory):
    """One local Ray instance at a time: the suite runs on two xdist workers, and two Ray instances
    starting side by side on 2 cores time out (seen in CI). A file lock in the workers' common temp root."""
    with file_lock(shared_root(tmp_path_factory) / "ray-tests.lock"):
        yield


def folds(run_dir):
    return {p.name: json.loads(p.read_text()) for p in sorted((Path(run_dir) / "folds").glob("*.json"))}


@pytest.fixture(autouse=True)
def no_ray_left_behind():
    yield
    subprocess.run([str(Path(sys.executable).with_name("ray")), "stop", "--force"], capture_output=True)


def test_ray_records_equal_the_local_executor_bit_for_bit(tmp_path):
    suite = tiny_suite(tmp_path, TORCH_MNV2)
    local = run_cli("run", suite, "--run-dir", tmp_path / "local")
    assert local.returncode == 0, local.stderr
    # two CPUs per fold: the same thread count as the local run, hence the same floating-point sums
    ray = run_cli("run", suite, "--run-dir", tmp_path / "ray", *RAY, "--cpus-per-fold", "2")
    assert ray.returncode == 0, ray.stderr
    a, b = folds(tmp_path / "local"), folds(tmp_path / "ray")
    assert a.keys() == b.keys() and len(a) == 3
    for name in a:
        for key in ("test_ids", "y_true", "probabilities", "seed"):
            assert a[name][key] == b[name][key], (name, key)
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["executor"].startswith("ray") and manifest["folds_per_hour"] > 0
    reports = run_batch({run: (["report", tmp_path / run, "--format", "csv"], {}) for run in ("local", "ray")})
    ta, tb = (reports[run].stdout.splitlines() for run in ("local", "ray"))
    cols = ta[0].split(",")
    keep = [i for i, c in enumerate(cols) if c.startswith(("accuracy", "sensitivity", "specificity", "tp", "auc"))]
    assert [[r.split(",")[i] for i in keep] for r in ta] == [[r.split(",")[i] for i in keep] for r in tb]


def test_failing_unit_is_retried_then_recorded_while_others_finish(tmp_path, example_env):
    attempts = tmp_path / "attempts.txt"
    suite = tiny_suite(
        tmp_path,
        f'[backbones.f]\nplugin = "example/flaky"\nfail_on_id = "syn/syn-00000"\nattempts_file = "{attempts}"\n',
    )
    res = run_cli("run", suite, "--run-dir", tmp_path / "run", *RAY, "--max-retries", "2", env=example_env)
    assert res.returncode == 1
    assert "1 fold(s) failed" in res.stderr and "planted failure on syn/syn-00000" in res.stderr
    calls = attempts.read_text().splitlines()
    assert sum("syn/syn-00000" in line.split(",") for line in calls) == 3  # first try + 2 retries
    assert len(folds(tmp_path / "run")) == 2  # the other folds finished
    (failure,) = (tmp_path / "run" / "failed").glob("*.json")
    assert "planted failure" in json.loads(failure.read_text())["error"]
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["status"] == "incomplete"


def test_killed_driver_resumes_with_every_fold_exactly_once(tmp_path):
    # (Ray's start and its workers' imports take most of this test's time, not these folds: measured, a
    # smaller workload saved nothing, so the folds stay long enough for the kill to land mid-run)
    suite = tiny_suite(tmp_path, TORCH_MNV2.replace("[48, 48]", "[64, 64]"), name="rkill")
    suite.write_text(suite.read_text().replace("k = 3", "k = 4").replace("epochs = 1", "epochs = 4"))
    exe = Path(sys.executable).with_name("benchbox")
    proc = subprocess.Popen(
        [str(exe), "run", str(suite), *RAY, "--cpus-per-fold", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline, folds_dir = time.time() + 900, None
    while time.time() < deadline and folds_dir is None:
        found = list((tmp_path / "runs").glob("rkill-*/folds/*.json"))
        folds_dir = found[0].parent if found else None
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert folds_dir is not None
    finished = {p.name: p.read_text() for p in folds_dir.glob("*.json")}
    assert 0 < len(finished) < 4
    subprocess.run([str(Path(sys.executable).with_name("ray")), "stop", "--force"], capture_output=True)
    res = run_cli("run", suite, *RAY, "--cpus-per-fold", "1")
    assert res.returncode == 0, res.stderr
    assert sorted(json.loads(p.read_text())["fold"] for p in folds_dir.glob("*.json")) == [0, 1, 2, 3]
    for name, text in finished.items():
        assert (folds_dir / name).read_text() == text


def test_frozen_schemes_under_ray_share_the_embedding_cache(tmp_path):
    """A linear probe and a kNN of one encoder as Ray tasks: the workers compute the features and write them to
    the driver's cache (BENCHBOX_CACHE); a rerun reads every feature and the encoder's inference time from it,
    and the probe's results are those of the first run. (The rerun runs in this machine's own process, the
    local executor: what the workers wrote is what any later run finds; reading the cache is the same code
    under either executor, and a second Ray run cost ~25 s of the test suite.)"""
    entries = ""
    for scheme in ("linear-probe", "knn"):
        entries += (
            f'[backbones.{scheme}]\nplugin = "timm/resnet18"\nweights = "none"\ninput_size = [48, 48]\n'
            f'scheme = "{scheme}"\n' + ("k = 5\n" if scheme == "knn" else "")
        )
    suite = tiny_suite(tmp_path, entries, name="rfrozen")
    env = {"BENCHBOX_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    first = run_cli("run", suite, "--run-dir", tmp_path / "first", *RAY, env=env)
    assert first.returncode == 0, first.stderr
    info = run_cli("cache", "info", env=env)
    assert "timm/resnet18" in info.stdout and "30" in info.stdout, info.stdout  # written by the workers
    again = run_cli("run", suite, "--run-dir", tmp_path / "again", env=env)
    assert again.returncode == 0, again.stderr
    a, b = folds(tmp_path / "first"), folds(tmp_path / "again")
    assert a.keys() == b.keys() and len(b) == 6
    for name, record in b.items():
        assert record["info"]["embedding_cache"]["computed"] == 0, name
        assert record["info"]["embedding_cache_test"]["computed"] == 0, name
        assert record["info"]["timing"]["encoder_timing"].startswith("kept from"), name
        assert record["probabilities"] == a[name]["probabilities"], name
