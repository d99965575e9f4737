"""The Keras engine on each of Keras's backends (TensorFlow, JAX, PyTorch), one model per cell
reset per fold, and mixed precision (issue 15, Keras side).

Keras picks its backend when first imported, so each backend runs in its own child process
(``PROBE`` below): it builds keras/mobilenet_v2 (alpha 0.35) at 32x32 frozen up to a deep cutoff,
trains one epoch on 12 tiny images through the engine with the prefix cache on, predicts, saves
the weights and loads them back, and loads one shared weights file (the TensorFlow child's) to
predict the same images: the three backends' predictions from that one file must agree.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from benchbox.errors import BenchboxError
from conftest import ROOT, needs_keras, once_per_session, start_early

BACKENDS = ("tensorflow", "jax", "torch")
#: the Keras layers frozen here: deep in MobileNet v2 (154 layers; the study's 10 is tested in test_backbones.py),
#: so the traced training step is short (one child: 30 -> 19 s of CPU); BatchNorm layers on both sides of it
DEEP_CUTOFF = 140
#: float32 convolutions of three libraries on one weights file: probabilities agree to this (abs)
ACROSS_BACKENDS = 1e-4

PROBE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from benchbox.contracts import FoldJob, TrainingConfig
    from benchbox.plugins import load_registry

    out_path, ref_path, CUTOFF = sys.argv[1], sys.argv[2], int(sys.argv[3])
    b = load_registry().get("backbone", "keras/mobilenet_v2")
    opts = {**b.defaults, "weights": "none", "input_size": [32, 32], "alpha": 0.35, "head": [8], "cutoff": CUTOFF}
    b.prepare(opts)  # pins the backend, before Keras is imported
    from benchbox_keras import engine
    keras = engine.import_keras()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (12, 32, 32), dtype=np.uint8)
    y = np.arange(12) % 3
    xt = rng.integers(0, 255, (6, 32, 32), dtype=np.uint8)
    ids = [f"t{i}" for i in range(6)]
    job = FoldJob(x, y, xt, 3, opts, TrainingConfig(epochs=1, batch_size=4), seed=5,
                  train_ids=[f"s{i}" for i in range(12)], test_ids=ids)
    tm = b.fit(job)
    cached = b.predict(tm, xt, ids)
    whole = b.predict(tm, xt, None)
    base = tm.net.get_layer(next(l.name for l in tm.net.layers if isinstance(l, keras.Model)))
    frozen_bn = [l for l in base.layers[:CUTOFF] if isinstance(l, keras.layers.BatchNormalization)]
    trained_bn = [l for l in base.layers[CUTOFF:] if isinstance(l, keras.layers.BatchNormalization)]
    mm = lambda l: keras.ops.convert_to_numpy(l.moving_mean)
    engine.save_weights(tm.net, out_path)
    reloaded, _ = engine.build_model("mobilenet_v2", {**opts, "weights": out_path}, 3, seed=99)
    if ref_path:
        ref, _ = engine.build_model("mobilenet_v2", {**opts, "weights": ref_path}, 3, seed=99)
    else:  # the TensorFlow child: its own file is the shared one
        ref = reloaded
    predict = lambda m: np.asarray(keras.ops.convert_to_numpy(m.predict(engine.as_input(xt), verbose=0)))
    from benchbox_keras import gradcam
    layer = "auto" if keras.backend.backend() == "jax" else "block_1_expand_relu"
    cam = gradcam.explain(ref, xt[:2], np.array([0, 2]), layer)
    print("PROBE" + json.dumps({
        "backend": keras.backend.backend(),
        "info": {k: tm.info[k] for k in ("keras_backend", "prefix_cache", "model", "device", "precision")},
        "frozen_bn": [bool(not l.trainable and np.all(mm(l) == 0)) for l in frozen_bn],
        "trained_bn_moved": bool(any(np.any(mm(l) != 0) for l in trained_bn)),
        "cached": cached.tolist(), "whole": whole.tolist(),
        "reloaded": predict(reloaded).tolist(), "ref": predict(ref).tolist(), "cam": cam.tolist(),
    }))
    """
)


def _installed(backend: str) -> bool:
    return importlib.util.find_spec(backend) is not None and importlib.util.find_spec("keras") is not None


def _probe(backend: str, out_path, ref_path="") -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if backend == "jax":  # XLA compiles each new shape (54 weight initialisers alone): unoptimised machine
        # code compiles in 2/3 of the CPU time (47 -> 32 s) and computes the same numbers
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "plugins"), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(out_path), str(ref_path), str(DEEP_CUTOFF)],
        capture_output=True,
        text=True,
        timeout=1800,  # ~30-60 s of CPU each; far more than that on a loaded machine is no reason to fail
        env=env,
        cwd=ROOT,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("PROBE")]
    assert out.returncode == 0 and lines, f"{backend} child failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    return json.loads(lines[-1][len("PROBE") :])


def compute_probes(tmp_path_factory) -> dict:
    """The TensorFlow child first (its weights file is the shared one), then JAX and PyTorch side by side."""
    tmp = tmp_path_factory.mktemp("keras_backends")
    ref = tmp / "tensorflow.weights.h5"
    results = {"tensorflow": _probe("tensorflow", ref)}
    others = [b for b in BACKENDS[1:] if _installed(b)]
    with ThreadPoolExecutor(len(others) or 1) as pool:
        futures = {b: pool.submit(_probe, b, tmp / f"{b}.weights.h5", ref) for b in others}
        results.update({b: f.result() for b, f in futures.items()})
    return results


if _installed("tensorflow"):  # ~45-60 s of child processes: started when the session starts, not waited for
    start_early(__name__, "probes", "keras-backend-probes", compute_probes)


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    if not _installed("tensorflow"):
        pytest.skip("Keras + TensorFlow not installed: no reference weights file")
    return once_per_session(tmp_path_factory, "keras-backend-probes", compute_probes)  # once, not per worker


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_engine_trains_predicts_and_round_trips_weights_on_each_backend(probes, backend):
    if backend not in probes:
        pytest.skip(f"{backend} is not installed")
    r = probes[backend]
    assert r["backend"] == backend and r["info"]["keras_backend"] == backend  # recorded in the fold's info
    assert r["info"]["prefix_cache"] == "computed" and r["info"]["model"] == "built"
    assert r["info"]["device"] == "cpu:0" and r["info"]["precision"] == "fp32"
    assert r["frozen_bn"] and all(r["frozen_bn"])  # frozen BatchNorm kept its initial statistics
    assert r["trained_bn_moved"]  # ... while a trained one updated its own
    cached, whole, reloaded = (np.array(r[k]) for k in ("cached", "whole", "reloaded"))
    assert np.allclose(cached.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(cached - whole).max() < 1e-5  # cached prefix == the whole network
    assert np.abs(reloaded - whole).max() < 1e-6  # the weights file round trip


@pytest.mark.slow
def test_one_weights_file_predicts_the_same_on_every_backend(probes):
    if len(probes) < 2:
        pytest.skip("only one Keras backend installed")
    ref = np.array(probes["tensorflow"]["ref"])
    for backend, r in probes.items():
        diff = np.abs(np.array(r["ref"]) - ref).max()
        assert diff < ACROSS_BACKENDS, f"{backend} vs tensorflow: max abs difference {diff:.2e}"
    # Grad-CAM of the same file: an inner layer's maps on TensorFlow and PyTorch (JAX: the last map only)
    tf_cam = np.array(probes["tensorflow"]["cam"])
    assert tf_cam.shape == (2, 16, 16) and tf_cam.max() == pytest.approx(1.0)
    if "torch" in probes:
        assert np.abs(np.array(probes["torch"]["cam"]) - tf_cam).max() < 1e-3
    if "jax" in probes:
        jax_cam = np.array(probes["jax"]["cam"])
        assert jax_cam.shape[0] == 2 and np.all((jax_cam >= 0) & (jax_cam <= 1))


# --- in this process (TensorFlow) ----------------------------------------------------------
def _tf_engine():
    from benchbox_keras import engine

    keras = engine.import_keras()
    if keras.backend.backend() != "tensorflow":
        pytest.skip(f"this process runs Keras on {keras.backend.backend()}")
    return keras, engine


def _job(seed, training, options=None):
    from benchbox.contracts import FoldJob

    rng = np.random.default_rng(1)
    x = rng.integers(0, 255, (12, 32, 32), dtype=np.uint8)
    xt = rng.integers(0, 255, (6, 32, 32), dtype=np.uint8)
    opts = {
        "head": [8, 8],
        "dropout": 0.5,
        "pooling": "avg",
        "weights": "none",
        "input_size": [32, 32],
        "alpha": 0.35,
        "cache_prefix": True,
        "backend": "auto",
        "cutoff": DEEP_CUTOFF,
        **(options or {}),
    }
    ids = [f"t{i}" for i in range(6)]
    return FoldJob(
        x, np.arange(12) % 3, xt, 3, opts, training, seed, train_ids=[f"s{i}" for i in range(12)], test_ids=ids
    )


@needs_keras
@pytest.mark.slow
def test_a_reused_model_predicts_as_a_freshly_built_one(monkeypatch):
    """Fold 2 on the model built for fold 1 (reset to fold 2's seed) == fold 2 built afresh: bit for
    bit on TensorFlow's CPU (head dropout seeds, BatchNorm statistics and Adam's state are all reset;
    the same holds with augmentation, checked by hand as the uncached path costs two more traces)."""
    from benchbox.contracts import TrainingConfig

    keras, engine = _tf_engine()
    training = TrainingConfig(epochs=2, batch_size=4)
    engine.MODELS.clear()
    monkeypatch.delenv("BENCHBOX_REBUILD_EACH_FOLD", raising=False)
    first = engine.fit("mobilenet_v2", _job(1, training))
    p1 = engine.predict_images(first, _job(1, training).x_test, first.test_ids)
    job = _job(2, training)
    reused = engine.fit("mobilenet_v2", job)
    assert reused.info["model"] == "reused" and reused.info["train_warmup_seconds"] < 2.0  # no tracing again
    p_reused = engine.predict_images(reused, job.x_test, job.test_ids)
    with pytest.raises(BenchboxError, match="reset for a later fold"):
        engine.predict_images(first, job.x_test)  # fold 1's model is gone: said, not silently wrong
    monkeypatch.setenv("BENCHBOX_REBUILD_EACH_FOLD", "1")
    fresh = engine.fit("mobilenet_v2", job)
    assert fresh.info["model"] == "built"
    p_fresh = engine.predict_images(fresh, job.x_test, job.test_ids)
    assert np.array_equal(p_reused, p_fresh)
    assert np.abs(p_reused - p1).max() > 1e-6  # another seed: another model
    engine.MODELS.clear()


@needs_keras
@pytest.mark.slow
def test_mixed_precision_trains_in_bfloat16_on_the_cpu_and_restores_the_policy():
    from benchbox.contracts import TrainingConfig

    keras, engine = _tf_engine()
    job = _job(3, TrainingConfig(epochs=1, batch_size=4, precision="mixed"), {"head": [8]})
    model = engine.fit("mobilenet_v2", job)
    assert keras.config.dtype_policy().name == "float32"  # restored after the build
    assert model.info["precision"] == "mixed" and model.info["dtype_policy"] == "mixed_bfloat16"
    assert model.net.get_layer("head_dense_1").compute_dtype == "bfloat16"
    assert model.net.get_layer("predictions").compute_dtype == "float32"  # softmax in float32
    p = engine.predict_images(model, job.x_test, job.test_ids)
    assert p.shape == (6, 3) and np.all(np.isfinite(p)) and np.allclose(p.sum(axis=1), 1.0, atol=1e-5)
    engine.MODELS.clear()


@needs_keras
@pytest.mark.slow
def test_bench_steps_in_mixed_precision_train_and_infer_and_restore_the_policy():
    """`benchbox bench keras/... --amp` (the GPU study's Keras throughput, tests/test_gpu_study.py times PyTorch's
    only): VGG19, the Keras network that traces quickest, at 32x32."""
    from benchbox.execute.bench import bench_backbone
    from benchbox.plugins import load_registry

    keras, _ = _tf_engine()
    backbone = load_registry().get("backbone", "keras/vgg19")
    options = {**backbone.defaults, "weights": "none", "input_size": [32, 32]}
    rows = bench_backbone(backbone, options, [1, 2], 2, "cpu", True, False, min_seconds=0.01)
    assert [(r["model"], r["amp"], r["infer_batch_size"], r["train_batch_size"]) for r in rows] == [
        ("keras/vgg19", True, 1, 2),
        ("keras/vgg19", True, 2, 2),
    ]
    assert all(r["infer_samples_per_sec"] > 0 and r["train_samples_per_sec"] > 0 for r in rows)
    assert rows[0]["infer_img_size"] == "32x32" and rows[0]["param_count"] > 0
    assert keras.config.dtype_policy().name == "float32"  # the mixed policy does not leak out of bench


# --- choosing the backend (no Keras imported) ----------------------------------------------------
@pytest.mark.skipif(not _installed("jax") or not _installed("torch"), reason="needs jax and torch installed")
def test_two_keras_backbones_asking_for_different_backends_stop_the_run(tmp_path):
    """One backend per process: the run stops before any data is loaded, naming both backbones."""
    suite = tmp_path / "two.toml"
    suite.write_text(
        textwrap.dedent(
            """
            name = "two"
            [protocol]
            k = 2
            [datasets.syn]
            plugin = "synthetic"
            images = 12
            patients = 6
            [backbones.a]
            plugin = "keras/mobilenet_v2"
            weights = "none"
            backend = "jax"
            [backbones.b]
            plugin = "keras/vgg19"
            weights = "none"
            backend = "torch"
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    code = (
        "import sys\n"
        "from benchbox.plugins import load_registry\n"
        "from benchbox.execute.runner import check_backbones\n"
        "from benchbox.define.suite import load_suite\n"
        "r = load_registry()\n"
        f"check_backbones(load_suite({str(suite)!r}, r), r)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert out.returncode != 0
    assert "one backend per process" in out.stderr and "keras/mobilenet_v2" in out.stderr, out.stderr[-2000:]


def test_the_backend_option_is_checked_and_a_missing_backend_named(monkeypatch):
    from benchbox_keras import backends

    assert backends.option_problems({"backend": "tensorflow"}) == [] or not backends.installed("tensorflow")
    assert "not a Keras backend" in backends.option_problems({"backend": "theano"})[0]
    monkeypatch.setattr(backends, "installed", lambda name: name != "jax")
    assert "pip install jax" in backends.option_problems({"backend": "jax"})[0]
