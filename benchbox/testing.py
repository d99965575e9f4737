"""A conformance kit for backbone plugin authors, in the spirit of scikit-learn's check_estimator.

    from benchbox.testing import check_backbone
    def test_my_backbone():
        check_backbone(MyBackbone(), options={"input_size": [64, 64]})

It trains the backbone on tiny synthetic folds through the public contract only (no framework
knowledge), through the same harness as `benchbox run` (so its timings and output checks are the
run's), and raises AssertionError naming the first rule broken.
"""

from __future__ import annotations

import numpy as np

from benchbox.contracts import Backbone, FoldJob, TrainingConfig
from benchbox.errors import PluginError
from benchbox.execute.harness import CHANNEL_NAMES, accepted_channels_problem, run_fold


def _tiny_fold(num_classes: int, size, seed: int = 0, n_train: int = 12, n_test: int = 6, channels: int = 1):
    rng = np.random.default_rng(seed)
    h, w = size
    shape = (h, w) if channels == 1 else (h, w, channels)
    y_train = np.arange(n_train) % num_classes
    x_train = rng.integers(0, 60, (n_train, *shape), dtype=np.uint8)
    x_test = rng.integers(0, 60, (n_test, *shape), dtype=np.uint8)
    for x, y in ((x_train, y_train),):
        for i, label in enumerate(y):  # class-dependent brightness: learnable, not required to be
            x[i] += np.uint8(60 * label)
    return x_train, y_train, x_test


def check_backbone(
    backbone: Backbone,
    options: dict | None = None,
    epochs: int = 1,
    batch_size: int = 4,
    class_counts=(2, 3),
    channels: int | None = None,
) -> dict:
    """Check a backbone plugin against the contract; return the options used.

    Trains ``len(class_counts) + 1`` times (the last repeats 3 classes to check determinism).
    ``channels = 3`` feeds colour folds (N, H, W, 3), as a data set with ``color = "rgb"`` does;
    ``channels = 1`` grayscale folds (N, H, W); None (the default): grayscale, or RGB for a backbone
    whose ``accepted_channels`` is (3,)."""
    assert channels in (None, 1, 3), "channels: 1 (grayscale folds) or 3 (RGB folds)"
    assert isinstance(backbone.name, str) and "/" in backbone.name, (
        f"name {backbone.name!r}: use 'framework/network', e.g. 'keras/resnet50'"
    )
    assert backbone.framework, f"{backbone.name}: set `framework`"
    invalid = accepted_channels_problem(backbone, backbone.name)
    assert invalid is None, invalid
    accepted = tuple(getattr(backbone, "accepted_channels", (1, 3)))
    if channels is None:
        channels = 1 if 1 in accepted else 3
    assert channels in accepted, (
        f"{backbone.name}: accepted_channels = {accepted!r}: it declares that it does not take "
        f"{CHANNEL_NAMES[channels]} folds (a run refuses them before fit); check it with "
        f"channels={accepted[0]}, or accept both (the default (1, 3)) and convert with "
        "benchbox.data.images.to_channels"
    )
    avail = backbone.availability()
    assert avail.ok, f"{backbone.name}: unavailable here: {avail.reason}"
    opts = {**dict(backbone.defaults), "weights": "none", **(options or {})}
    for key in options or {}:
        assert key in backbone.defaults, f"{backbone.name}: option {key!r} is not declared in `defaults`"
    problems = backbone.check_options(opts)
    assert problems == [], f"{backbone.name}: its own defaults are rejected by check_options: {problems}"
    assert "input_size" in opts, f"{backbone.name}: declare input_size in `defaults`"
    backbone.prepare(opts)  # weights = "none" must never need the network
    size = tuple(opts["input_size"])
    training = TrainingConfig(epochs=epochs, batch_size=batch_size)

    outputs = {}
    for num_classes in class_counts:
        x_train, y_train, x_test = _tiny_fold(num_classes, size, channels=channels)
        job = FoldJob(x_train, y_train, x_test, num_classes, opts, training, seed=11)
        try:
            out = run_fold(backbone, backbone.name, job, f"a tiny {num_classes}-class fold")
        except PluginError as exc:  # the harness's own contract checks, as a test failure
            raise AssertionError(str(exc)) from exc
        p = out.probabilities
        assert out.train_seconds >= 0 and out.predict_seconds >= 0, f"{backbone.name}: negative timings"
        assert np.isfinite(out.infer_images_per_sec) and out.infer_images_per_sec > 0, (
            f"{backbone.name}: the harness could not time predict(model, images, ids=None)"
        )
        assert "train_seconds" not in out.info and "predict_seconds" not in out.info, (
            f"{backbone.name}: info must not carry headline timings (the harness measures them)"
        )
        info = out.info
        if {"params_total", "params_frozen", "params_trainable"} <= set(info):
            assert info["params_frozen"] + info["params_trainable"] == info["params_total"], (
                f"{backbone.name}: frozen + trainable parameters != total"
            )
        outputs[num_classes] = p

    x_train, y_train, x_test = _tiny_fold(3, size, channels=channels)
    model = backbone.fit(FoldJob(x_train, y_train, x_test, 3, opts, training, seed=11))
    again = np.asarray(backbone.predict(model, x_test, None), dtype=float)
    whole = np.asarray(backbone.predict(model, x_test, [f"test/{i}" for i in range(len(x_test))]), dtype=float)
    assert np.allclose(again, whole, atol=1e-4), (
        f"{backbone.name}: predict with ids (cached work) and without (whole network) disagree"
    )
    first = outputs[3] if 3 in outputs else again
    assert np.allclose(again, first, atol=1e-6), (
        f"{backbone.name}: the same seed gave different predictions (seed weight init and shuffling)"
    )
    return opts
