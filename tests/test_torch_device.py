"""The PyTorch engine's device, precision and per-cell model reuse (issue 15).

- training.device: "cpu" and "auto" agree on a machine without a GPU; "cuda" without one is a clear
  error before any work; each fold's info says where and how it ran.
- training.precision = "mixed" on the CPU autocasts to bfloat16: valid probabilities, within 0.05
  of fp32 after one epoch (measured: 0.014 on MobileNet v2 at 32x40).
- No per-fold rebuild: a model reset for a fold predicts exactly (np.array_equal) what a fresh
  build with that fold's seed predicts; a fold's model reset for a later fold refuses to predict.
- On a machine with CUDA (skipped elsewhere): channels-last, float16 autocast, GPU name recorded.
"""

import dataclasses

import numpy as np
import pytest

from benchbox.contracts import FoldJob, TrainingConfig
from benchbox.errors import BenchboxError
from conftest import fit_predict, needs_torch

pytestmark = needs_torch


# torch is imported when a test runs, not when the tests are collected (3.5 s in each test worker)
@pytest.fixture
def without_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the behaviour of a machine without a GPU")


@pytest.fixture
def with_gpu():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")


no_gpu = pytest.mark.usefixtures("without_gpu")
needs_gpu = pytest.mark.usefixtures("with_gpu")


def tiny_spec(options):
    """A two-block CNN as a NetSpec: the first conv and its BatchNorm frozen, so the prefix cache applies."""
    from torch import nn

    from benchbox_torch import engine

    def make_base(pretrained):
        base = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Conv2d(4, 8, 3, stride=2, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
        )
        return base, engine.IMAGENET_MEAN, engine.IMAGENET_STD

    return engine.NetSpec(
        name="test/tiny",
        make_base=make_base,
        frozen_count=lambda units: 2,
        cache_key=lambda n_frozen, seed: ("test/tiny", n_frozen, seed),
        fallback=lambda n_frozen, training: None if options["cache_prefix"] else "cache_prefix = false",
    )


TINY = {"weights": "none", "input_size": [16, 20], "pooling": "avg", "head": [8, 6], "dropout": 0.5}


def job(options, seed=5, fold=0, size=None, n=24, **training):
    """Fold ``fold`` of 3 over n seeded random images (3 classes), with its own ids."""
    size = size or options["input_size"]
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (n, *size), dtype=np.uint8)
    y = np.arange(n) % 3
    test = np.arange(n) % 3 == fold
    ids = np.array([f"img{i}" for i in range(n)])
    return FoldJob(
        x[~test],
        y[~test],
        x[test],
        3,
        options,
        TrainingConfig(**{"epochs": 1, "batch_size": 4, **training}),
        seed=seed,
        train_ids=ids[~test].tolist(),
        test_ids=ids[test].tolist(),
    )


def fit_and_predict(network, j):
    """(test-fold probabilities through the engine's cached path, the whole network's, info)."""
    from benchbox_torch import engine

    model = engine.fit(network, j)
    cached = engine.predict_images(model, j.x_test, list(j.test_ids))
    whole = engine.predict_images(model, j.x_test, None)
    return cached, whole, dict(model.info)


@pytest.fixture
def models(monkeypatch):
    """A fresh, empty model cache and prefix cache for the test (the engine's are per process)."""
    from benchbox_engine_common.prefix_cache import CACHE
    from benchbox_torch import engine

    cache = engine.ModelCache()
    monkeypatch.setattr(engine, "MODELS", cache)
    monkeypatch.delenv("BENCHBOX_REBUILD_EACH_FOLD", raising=False)
    CACHE.clear()
    yield cache
    CACHE.clear()


def folds_both_ways(monkeypatch, make_network, options):
    """Two folds (other data, other seed) through the reused model, then each built afresh."""
    reused = [fit_and_predict(make_network(), job(options, seed=s, fold=f)) for f, s in ((0, 5), (1, 6))]
    monkeypatch.setenv("BENCHBOX_REBUILD_EACH_FOLD", "1")
    fresh = [fit_and_predict(make_network(), job(options, seed=s, fold=f)) for f, s in ((0, 5), (1, 6))]
    return reused, fresh


# --- device --------------------------------------------------------------------------------
@no_gpu
def test_cuda_without_a_gpu_is_a_clear_error_before_any_work(registry, models):
    backbone = registry.get("backbone", "torch/mobilenet_v2")
    nothing = FoldJob(None, None, None, 3, dict(backbone.defaults), TrainingConfig(device="cuda"), seed=1)
    with pytest.raises(BenchboxError) as err:  # no data touched, no network built: the job holds none
        backbone.fit(nothing)
    text = str(err.value)
    assert 'training.device = "cuda"' in text and "no CUDA device" in text
    assert '"auto"' in text and '"cpu"' in text  # what to do instead
    assert models.builds == 0
    bad = FoldJob(None, None, None, 3, dict(backbone.defaults), TrainingConfig(precision="half"), seed=1)
    with pytest.raises(BenchboxError, match='training.precision = .half.; use "fp32" or "mixed"'):
        backbone.fit(bad)


@pytest.mark.slow
@no_gpu
def test_cpu_and_auto_train_the_same_and_the_fold_record_says_where(registry, models):
    backbone = registry.get("backbone", "torch/mobilenet_v2")
    opts = {**backbone.defaults, "weights": "none", "input_size": [32, 40]}
    cpu = fit_predict(backbone, job(opts, device="cpu"))
    auto = fit_predict(backbone, job(opts, device="auto"))
    assert np.array_equal(cpu.probabilities, auto.probabilities)
    for out in (cpu, auto):
        info = out.info
        assert (info["device"], info["precision"], info["channels_last"], info["gpu"]) == ("cpu", "fp32", False, None)
        assert info["train_loop_seconds"] > 0 and info["predict_loop_seconds"] > 0
    assert (cpu.info["model"], auto.info["model"]) == ("built", "reused")


@pytest.mark.slow
def test_mixed_precision_on_the_cpu_is_bfloat16_and_close_to_fp32(registry, models):
    backbone = registry.get("backbone", "torch/mobilenet_v2")
    opts = {**backbone.defaults, "weights": "none", "input_size": [32, 40]}
    fp32 = fit_and_predict("mobilenet_v2", job(opts, device="cpu"))
    mixed = fit_and_predict("mobilenet_v2", job(opts, device="cpu", precision="mixed"))
    cached, whole, info = mixed
    assert (info["precision"], info["autocast_dtype"]) == ("mixed", "bfloat16")
    for p in (cached, whole):
        assert p.dtype == np.float64 and np.isfinite(p).all()
        assert np.allclose(p.sum(axis=1), 1.0) and (p >= 0).all()
    assert not np.array_equal(whole, fp32[1])  # bfloat16 arithmetic did run...
    assert np.abs(whole - fp32[1]).max() < 0.05  # ...and stays close to fp32 after an epoch
    assert np.abs(cached - fp32[0]).max() < 0.05


# --- one build per cell ----------------------------------------------------------------------
@pytest.mark.parametrize("cache_prefix", [True, False])
def test_a_reused_model_predicts_exactly_what_a_fresh_build_does(monkeypatch, models, cache_prefix):
    options = {**TINY, "cache_prefix": cache_prefix}
    reused, fresh = folds_both_ways(monkeypatch, lambda: tiny_spec(options), options)
    assert [r[2]["model"] for r in reused] == ["built", "reused"]
    assert [r[2]["model"] for r in fresh] == ["built", "built"]
    assert [r[2]["prefix_cache"] == "computed" for r in reused] == [cache_prefix] * 2
    for (r_cached, r_whole, _), (f_cached, f_whole, _) in zip(reused, fresh):
        assert np.array_equal(r_cached, f_cached) and np.array_equal(r_whole, f_whole)
    assert not np.array_equal(reused[0][1][:4], reused[1][1][:4])  # the folds differ: a real second fold
    assert models.builds == 1 and models.reuses == 1


@pytest.mark.slow
def test_mobilenet_reused_across_folds_equals_fresh_builds(monkeypatch, registry, models):
    """The study's network: frozen BatchNorm, dropout in the head, the fx-split prefix cache."""
    backbone = registry.get("backbone", "torch/mobilenet_v2")
    opts = {**backbone.defaults, "weights": "none", "input_size": [32, 40]}
    reused, fresh = folds_both_ways(monkeypatch, lambda: "mobilenet_v2", opts)
    assert [r[2]["model"] for r in reused] == ["built", "reused"]
    for (r_cached, r_whole, _), (f_cached, f_whole, _) in zip(reused, fresh):
        assert np.array_equal(r_cached, f_cached) and np.array_equal(r_whole, f_whole)


def test_a_fold_model_reset_for_a_later_fold_refuses_to_predict(models):
    from benchbox_torch import engine

    options = {**TINY, "cache_prefix": True}
    first_job = job(options, seed=1, fold=0)
    first = engine.fit(tiny_spec(options), first_job)
    engine.predict_images(first, first_job.x_test, None)  # its own fold: fine
    engine.fit(tiny_spec(options), job(options, seed=2, fold=1))
    with pytest.raises(BenchboxError, match="reset for a later fold"):
        engine.predict_images(first, first_job.x_test, None)


def test_the_model_cache_holds_at_most_two_models(models):
    from benchbox_torch import engine

    options = {**TINY, "cache_prefix": True}
    spec, rt = tiny_spec(options), engine.CPU_FP32

    def fetch(classes, seed):
        j = dataclasses.replace(job(options, seed=seed), num_classes=classes)
        return models.fetch(
            engine.ENGINE.cache_key(spec, j, rt),
            lambda: engine.ENGINE.build(spec, j, rt),
            lambda built: engine.ENGINE.reset(built, spec, j, rt),
        )

    for classes in (2, 3, 4):  # three cells' models
        fetch(classes, 1)
    assert len(models._models) == 2 and models.builds == 3
    fetch(4, 2)  # the current cell: reused
    fetch(2, 2)  # the first one was dropped: built again
    assert (models.builds, models.reuses) == (4, 1)


# --- on a GPU ------------------------------------------------------------------------------
@needs_gpu
@pytest.mark.parametrize("precision", ["fp32", "mixed"])
def test_a_cuda_fold_runs_channels_last_and_predicts_what_its_weights_do_on_the_cpu(registry, models, precision):
    """Training on the GPU (float16 with loss scaling when mixed) is not compared with the CPU's:
    Adam's first steps amplify rounding differences. Its trained weights are: the GPU's prediction
    (channels-last, TF32 convolutions, autocast) against the same weights' fp32 prediction on the CPU."""
    import torch

    from benchbox_torch import engine

    backbone = registry.get("backbone", "torch/mobilenet_v2")
    opts = {**backbone.defaults, "weights": "none", "input_size": [32, 40]}
    info = fit_predict(backbone, job(opts, device="cuda", precision=precision)).info
    assert info["device"].startswith("cuda") and info["gpu"] == torch.cuda.get_device_name(0)
    assert info["channels_last"] is True and info["precision"] == precision
    j = job(opts, device="cuda", precision=precision, epochs=2)
    model = engine.fit("mobilenet_v2", j)
    conv = next(m for m in model.net.base.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_cuda and conv.weight.is_contiguous(memory_format=torch.channels_last)
    cached = engine.predict_images(model, j.x_test, list(j.test_ids))
    whole = engine.predict_images(model, j.x_test, None)
    for p in (cached, whole):
        assert isinstance(p, np.ndarray) and p.dtype == np.float64 and np.allclose(p.sum(axis=1), 1.0)
    cpu_net, _ = engine.build_model("mobilenet_v2", opts, 3, 0)
    cpu_net.load_state_dict({k: v.cpu() for k, v in model.net.state_dict().items()})
    on_cpu = engine.predict(cpu_net, j.x_test, 4)
    tolerance = 2e-3 if precision == "fp32" else 2e-2
    assert np.abs(whole - on_cpu).max() < tolerance and np.abs(cached - on_cpu).max() < tolerance
