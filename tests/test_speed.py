"""Frozen-prefix caching (equivalence, fallback, memory bound) and the throughput timer."""

import numpy as np
import pytest

from benchbox.contracts import FoldJob, TrainingConfig
from benchbox.execute.bench import CSV_COLUMNS, Steps, measure
from benchbox_engine_common.prefix_cache import PrefixCache
from conftest import fit_predict, needs_keras, needs_torch, run_cli


class FakeDevice:
    """A clock that advances only when a step runs, and a sync that records when it was called."""

    def __init__(self):
        self.now = 0.0
        self.events = []

    def clock(self):
        self.events.append("clock")
        return self.now

    def sync(self):
        self.events.append("sync")

    def step(self):
        self.events.append("step")
        self.now += 0.010 if sum(e == "step" for e in self.events) > 3 else 5.0  # warm-up steps are slow


def test_timer_syncs_before_every_clock_read_and_excludes_warmup():
    dev = FakeDevice()
    r = measure(
        Steps(step=dev.step, sync=dev.sync), batch_size=4, clock=dev.clock, warmup=3, min_steps=5, min_seconds=0.095
    )
    assert r["step_time"] == pytest.approx(10.0)  # ms; the 5 s warm-up steps are not in it
    assert r["samples_per_sec"] == pytest.approx(400.0)
    assert r["steps"] == 10  # until 0.1 s of measured time
    timed = dev.events[3:]
    for i, e in enumerate(timed):
        if e == "clock":
            assert timed[i - 1] == "sync", "a clock read without a device synchronisation before it"


def test_prefix_cache_is_bounded_and_spills_to_disk(tmp_path):
    cache = PrefixCache(limit_bytes=1000, directory=tmp_path)
    small = np.ones((2, 10), np.float32)  # 80 bytes
    big = np.arange(2 * 500, dtype=np.float32).reshape(2, 500)  # 4000 bytes: over the limit
    cache.put(("a",), ["x", "y"], [small])
    cache.put(("b",), ["x", "y"], [big])  # "a" is evicted first; "b" alone is still too big: it spills
    assert cache.memory_bytes == 0 and cache.disk_bytes == 4000
    assert cache.get(("a",), ["x"]) is None
    assert isinstance(cache._entries[("b",)][1][0], np.memmap)
    got = cache.get(("b",), ["y", "x"])[0]
    assert np.array_equal(got, big[::-1])
    assert cache.get(("b",), ["x", "z"]) is None


def test_prefix_cache_evicts_least_recently_used_so_a_run_stays_flat(tmp_path):
    """Random weights key an entry by the fold seed: ten folds must not pile up ten entries (nor spill)."""
    entry = np.ones((4, 25), np.float32)  # 400 bytes
    cache = PrefixCache(limit_bytes=1000, directory=tmp_path)
    for seed in range(10):
        cache.put(("net", seed), list("abcd"), [entry * seed])
    assert cache.memory_bytes == 800 and cache.disk_bytes == 0  # the last two folds' entries
    assert cache.get(("net", 7), list("abcd")) is None
    assert cache.get(("net", 9), list("dcba"))[0][0, 0] == 9
    cache.put(("net", 8), list("abcd"), [entry])  # replacing a key does not count it twice
    assert cache.memory_bytes == 800 and cache.evictions == 8


def test_prefix_cache_keeps_device_entries_apart_and_returns_them_uncopied(tmp_path):
    torch = pytest.importorskip("torch")
    cache = PrefixCache(limit_bytes=100, directory=tmp_path, device_limit_bytes=1000)
    t = torch.arange(40, dtype=torch.float32).reshape(4, 10)  # 160 bytes: over the host limit, not the device's
    cache.put(("dev",), list("abcd"), [t])
    assert cache.device_bytes == 160 and cache.disk_bytes == 0
    (same,) = cache.get(("dev",), list("abcd"))
    assert same is t  # the fold that computed it trains on it without a copy
    (picked,) = cache.get(("dev",), ["c", "a"])
    assert torch.equal(picked, t[[2, 0]])


def _job(size, options, augment=False):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (24, *size), dtype=np.uint8)
    y = np.arange(24) % 3
    return FoldJob(
        x[:18],
        y[:18],
        x[18:],
        3,
        options,
        TrainingConfig(epochs=2, batch_size=6, augment=augment),
        seed=9,
        train_ids=[f"i{k}" for k in range(18)],
        test_ids=[f"i{k}" for k in range(18, 24)],
    )


def _backbone(name):
    from benchbox.plugins import load_registry

    return load_registry().get("backbone", name)


@pytest.mark.parametrize(
    "name,size",
    [
        pytest.param("keras/vgg19", [32, 40], marks=needs_keras),
        pytest.param("torch/xception", [71, 80], marks=needs_torch),
        pytest.param("torch/mobilenet_v2", [32, 40], marks=needs_torch),
    ],
)
@pytest.mark.slow
def test_cached_and_uncached_training_give_the_same_predictions(name, size):
    b = _backbone(name)
    base = {**b.defaults, "weights": "none", "input_size": size}
    plain = fit_predict(b, _job(size, {**base, "cache_prefix": False}))
    cached = fit_predict(b, _job(size, {**base, "cache_prefix": True}))
    assert plain.info["prefix_cache"].startswith("off")
    assert cached.info["prefix_cache"] == "computed"
    np.testing.assert_allclose(cached.probabilities, plain.probabilities, atol=1e-5)


@pytest.mark.slow
@needs_torch
def test_pretrained_prefix_is_computed_once_per_run_and_reused(tmp_path):
    import torch

    from benchbox_torch import engine

    b = _backbone("torch/mobilenet_v2")
    net, _ = engine.build_model("mobilenet_v2", {**b.defaults, "weights": "none", "input_size": [32, 40]}, 3, 0)
    torch.save(net.base.state_dict(), tmp_path / "w.pth")  # a local "pretrained" file: same prefix every fold
    opts = {**b.defaults, "weights": str(tmp_path / "w.pth"), "input_size": [32, 40]}
    first = fit_predict(b, _job([32, 40], opts))
    second = fit_predict(b, _job([32, 40], opts))
    assert (first.info["prefix_cache"], second.info["prefix_cache"]) == ("computed", "hit")


@pytest.mark.parametrize(
    "name",
    [pytest.param("keras/mobilenet_v2", marks=needs_keras), pytest.param("torch/mobilenet_v2", marks=needs_torch)],
)
@pytest.mark.slow
def test_augmentation_falls_back_and_says_why(name):
    b = _backbone(name)
    # frozen deep (154 Keras layers): the fallback does not depend on where, and Keras traces a short step
    options = {**b.defaults, "weights": "none", "input_size": [32, 40], "cutoff": 140}
    out = fit_predict(b, _job([32, 40], options, augment=True))
    assert out.info["prefix_cache"] == "off: augmentation changes the prefix's input every epoch"
    assert np.allclose(out.probabilities.sum(1), 1)


@pytest.mark.slow
@needs_torch
def test_bench_csv_has_the_promised_columns(tmp_path):
    out = tmp_path / "bench.csv"
    res = run_cli(
        "bench",
        "torch/mobilenet_v2",
        "--batch-sizes",
        "1,2",
        "--train-batch-size",
        "2",
        "--input",
        "32x40",
        "--min-seconds",
        "0.05",
        "-o",
        out,
    )
    assert res.returncode == 0, res.stderr
    import pandas as pd

    frame = pd.read_csv(out)
    assert list(frame.columns) == CSV_COLUMNS
    assert frame["infer_batch_size"].tolist() == [1, 2] and (frame["infer_samples_per_sec"] > 0).all()
    assert frame["train_samples_per_sec"].notna().all() and frame["device"].eq("cpu").all()
    bad = run_cli("bench", "torch/mobilenet_v2", "--device", "tpu")
    assert bad.returncode == 1 and "choose cpu or cuda" in bad.stderr


def test_gpu_prefix_caching_only_where_it_pays():
    """The study's cutoffs at 200x266 (boundary values per image from the Keras models): MobileNet v2's
    shallow cut is recomputed on a GPU, the other four keep their cache."""
    from benchbox_engine_common.prefix_cache import host_round_trip_reason

    pixels = 200 * 266
    assert "10 of 154 layers" in host_round_trip_reason(1_276_800, pixels, 10, 154)
    for boundary, cutoff, layers in ((98_304, 18, 22), (30_720, 249, 311), (321_776, 120, 132), (49_920, 730, 780)):
        assert host_round_trip_reason(boundary, pixels, cutoff, layers) is None
    assert host_round_trip_reason(pixels, pixels, 1, 100) is None  # no larger than the image: caching is cheap
