"""The Keras 3 engine: build backbone + cutoff + head, train on a fold, predict the other.

Model layout: input (H, W, 1) in 0..255 -> gray_to_rgb -> imagenet_preprocess (the network's
own: x/127.5-1, or Caffe mean subtraction for VGG; for a ``keras/<application>`` family member,
the affine map its module's ``preprocess_input`` applies to a gray pixel) -> keras.applications
base (layers[:cutoff] frozen; a frozen BatchNormalization runs in inference mode in Keras 3 and a
frozen Dropout is switched off; the others update their moving statistics with PyTorch's
momentum, see BN_MOMENTUM) -> global pooling -> hidden Dense(ReLU) layers, Dropout between them
when there are two or more -> Dense softmax.

The study's five networks (``APPS``) and every other keras.applications network (families.py)
build, train, cache, bench and describe through the same functions, keyed by the model name; for
a family member the cutoff comes from its ``freeze`` option (``frozen_cutoff``).
"""

from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchbox.contracts import FoldJob, balanced_class_weights
from benchbox.errors import BenchboxError, WeightsError
from benchbox_engine_common.networks import BN_MOMENTUM, check_weights_file, weights_kind
from benchbox_engine_common.prefix_cache import CACHE, cache_key, fallback_reason, job_ids
from benchbox_keras import APPS, imagenet_file
from benchbox_keras.families import application, frozen_cutoff, imagenet_download, preprocess_affine

CAFFE_MEAN = [103.939, 116.779, 123.68]


def import_keras():
    """Import Keras, working around a crash: torchvision segfaults when its C extension loads
    after TensorFlow's, so when torchvision is installed it is imported first."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import sys

    if "tensorflow" not in sys.modules and importlib.util.find_spec("torchvision") is not None:
        import torchvision  # noqa: F401
    import keras

    return keras


def keras_cache_dir() -> str:
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "models")


def ensure_weights(network: str, options) -> None:
    """Make sure the requested weights can be loaded, downloading ImageNet weights into the Keras
    cache if needed; fail with what to do otherwise."""
    kind = weights_kind(options["weights"])
    if kind == "none":
        return
    if network not in APPS and kind == "imagenet":  # keras.applications downloads it while building
        application_base(import_keras(), network, options, imagenet=True)
        return
    if kind == "file":
        check_weights_file(
            f"keras/{network}",
            os.path.expanduser(options["weights"]),
            lambda: build_model(network, options, 2, 0),
            hint=f"; was it saved from keras/{network} with the same cutoff, head and input size?",
        )
        return
    fname, url, md5 = imagenet_file(network, options)
    cached = os.path.join(keras_cache_dir(), fname)
    if os.path.exists(cached):
        return
    keras = import_keras()
    try:
        keras.utils.get_file(
            fname, url, cache_dir=os.path.dirname(keras_cache_dir()), cache_subdir="models", file_hash=md5
        )
    except Exception as exc:  # no network, proxy, checksum: all end the same way for the user
        raise WeightsError(
            f"keras/{network}: ImageNet weights are not in the Keras cache and could not be downloaded "
            f"({type(exc).__name__}: {exc}).\n"
            f"    Keras looks for: {cached}\n"
            f"    It downloads from: {url}\n"
            f"    To fix: on a machine with a network run `benchbox weights fetch keras/{network}` and copy "
            f"{fname} into {keras_cache_dir()} (or set KERAS_HOME); or, in the suite's [backbones.*] table, "
            f'set weights = "none" (random initialisation) or weights = "/path/to/no_top_weights.h5".'
        ) from None


def _preprocess_layer(keras, network):
    if network not in APPS:
        mean, variance, _ = preprocess_affine(keras, network)
        return keras.layers.Normalization(mean=mean, variance=variance, name="imagenet_preprocess")
    if APPS[network].preprocessing == "caffe":
        # grayscale repeated to 3 channels, so the RGB->BGR swap is a no-op; subtract BGR means
        return keras.layers.Normalization(mean=CAFFE_MEAN, variance=[1.0, 1.0, 1.0], name="imagenet_preprocess")
    return keras.layers.Normalization(mean=127.5, variance=127.5**2, name="imagenet_preprocess")


def build_model(network: str, options, num_classes: int, seed: int):
    """The full model and its base; cutoff applied, weights loaded."""
    keras = import_keras()
    keras.utils.set_random_seed(seed)
    h, w = (int(v) for v in options["input_size"])
    kind = weights_kind(options["weights"])
    if network in APPS:
        kwargs = {"include_top": False, "weights": None, "input_shape": (h, w, 3)}
        if network == "mobilenet_v2":
            kwargs["alpha"] = float(options["alpha"])
        try:
            base = getattr(keras.applications, APPS[network].cls)(**kwargs)
        except ValueError as exc:
            raise BenchboxError(f"keras/{network}: cannot build for input_size {[h, w]} with {kwargs}: {exc}") from None
        if kind == "imagenet":  # the file keras.applications would load, from the cache ensure_weights fills
            ensure_weights(network, options)
            base.load_weights(os.path.join(keras_cache_dir(), imagenet_file(network, options)[0]))
    else:  # any other keras.applications network: Keras loads its own ImageNet file
        base = application_base(keras, network, options, imagenet=kind == "imagenet")
    for layer in base.layers:  # PyTorch's running-average speed (Keras momentum m = 1 - PyTorch momentum)
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 1.0 - BN_MOMENTUM
    cutoff = frozen_cutoff(network, options, base)
    for layer in base.layers[:cutoff]:
        layer.trainable = False
        if isinstance(layer, keras.layers.Dropout):  # frozen means inference behaviour, as BatchNorm's
            layer.rate = 0.0  # (EfficientNet's drop-connect; the study's five have no Dropout inside)
    inputs = keras.Input((h, w, 1), name="xray")
    x = keras.layers.Concatenate(name="gray_to_rgb")([inputs, inputs, inputs])
    x = _preprocess_layer(keras, network)(x)
    x = base(x)
    pool = keras.layers.GlobalAveragePooling2D if options["pooling"] == "avg" else keras.layers.GlobalMaxPooling2D
    x = pool(name="pooling")(x)
    head = list(options["head"])
    for i, units in enumerate(head):
        x = keras.layers.Dense(units, activation="relu", name=f"head_dense_{i + 1}")(x)
        if len(head) >= 2 and i < len(head) - 1:
            x = keras.layers.Dropout(float(options["dropout"]), name=f"head_dropout_{i + 1}")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs, name=f"benchbox_{network}")
    if kind == "file":
        load_weights_file(network, base, model, os.path.expanduser(options["weights"]))
    return model, base


def application_base(keras, network: str, options, imagenet: bool):
    """A keras.applications network without its top; with ``imagenet``, Keras loads (and if needed
    downloads into its cache) the ImageNet file itself; offline that is a WeightsError naming the
    URL, the cache path and what to do instead."""
    cls, _ = application(network)
    h, w = (int(v) for v in options["input_size"])
    kwargs = {"include_top": False, "weights": "imagenet" if imagenet else None, "input_shape": (h, w, 3)}
    build = getattr(keras.applications, cls)
    if not imagenet:
        try:
            return build(**kwargs)
        except ValueError as exc:
            raise BenchboxError(f"keras/{network}: cannot build for input_size {[h, w]}: {exc}") from None
    with imagenet_download() as seen:
        try:
            return build(**kwargs)
        except Exception as exc:
            if not seen:  # failed before any download: a shape keras.applications refuses
                raise BenchboxError(f"keras/{network}: cannot build for input_size {[h, w]}: {exc}") from None
            fname, url = seen[-1]
            cached = os.path.join(keras_cache_dir(), fname)
            raise WeightsError(
                f"keras/{network}: ImageNet weights are not in the Keras cache and could not be downloaded "
                f"({type(exc).__name__}: {str(exc)[:300]}).\n"
                f"    Keras looks for: {cached}\n"
                f"    It downloads from: {url}\n"
                f"    To fix: on a machine with a network run `benchbox weights fetch keras/{network}` and copy "
                f"{fname} into {keras_cache_dir()} (or set KERAS_HOME); or, in the suite's [backbones.*] table, "
                f'set weights = "none" (random initialisation) or weights = "/path/to/{fname}" '
                f"(a Keras weights file of this network: .h5, .weights.h5 or .keras)."
            ) from None


def load_weights_file(network, base, model, path):
    """A no-top backbone weights file (as keras.applications takes) or a whole benchbox model's."""
    errors = []
    for target in (base, model):
        try:
            target.load_weights(path)
            return
        except Exception as exc:
            errors.append(f"{target.name}: {exc}")
    raise WeightsError(
        f"keras/{network}: cannot load weights file {path} into the backbone or the whole "
        f"model; it must be a Keras weights file (.h5 or .weights.h5) of this network "
        f"and configuration. Details: {' | '.join(errors)}"
    )


def save_weights(model, path) -> None:
    """Save a whole benchbox model's weights (load again with weights = PATH)."""
    model.save_weights(str(path))


class _EpochProgress:
    def __init__(self, keras, job):
        class Callback(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if job.progress:
                    job.progress(epoch + 1, job.training.epochs)

        self.callback = Callback()


def as_input(x: np.ndarray) -> np.ndarray:
    return x.astype("float32")[..., None]


@dataclass
class TrainedModel:
    """A fold's trained model, and the cached prefix activations of its test fold (if any)."""

    model: Any
    trainer: Any  # the suffix that trained on cached activations, or None
    test_ids: list[str]
    x_test: Any
    batch_size: int
    info: dict = field(default_factory=dict)


def resolved_options(network: str, options, base) -> dict:
    """The options with ``cutoff`` the number of leading base layers actually frozen (for a family
    member, what its ``freeze`` option names), which the prefix cache keys on."""
    return {**options, "cutoff": frozen_cutoff(network, options, base)}


def fit(network: str, job: FoldJob) -> TrainedModel:
    keras = import_keras()
    model, base = build_model(network, job.options, job.num_classes, job.seed)
    options = resolved_options(network, job.options, base)
    reason = fallback_reason(options, job.training)
    info = parameter_counts(model)
    if job.training.augment:
        model = with_augmentation(keras, model, job.seed)
    if reason is None:
        trainer, x_train, x_test, cache_info = cached_prefix(keras, network, model, base, job, options)
        info.update(cache_info)
    else:
        trainer, x_train, x_test = model, as_input(job.x_train), None
        info["prefix_cache"] = f"off: {reason}"
    trainer.compile(
        optimizer=keras.optimizers.Adam(learning_rate=job.training.learning_rate),
        loss="sparse_categorical_crossentropy",
    )
    keras.utils.set_random_seed(job.seed)  # the same shuffling whether the prefix is cached or not
    class_weight = None
    if job.training.class_weight == "balanced":
        class_weight = dict(enumerate(balanced_class_weights(job.y_train, job.num_classes).tolist()))
    t0 = time.perf_counter()
    trainer.fit(
        x_train,
        job.y_train,
        epochs=job.training.epochs,
        batch_size=job.training.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=[_EpochProgress(keras, job).callback],
        class_weight=class_weight,
    )
    info["train_loop_seconds"] = time.perf_counter() - t0
    return TrainedModel(
        model, trainer if reason is None else None, job_ids(job)[1], x_test, job.training.batch_size, info
    )


def predict_images(model: TrainedModel, images: np.ndarray, ids=None) -> np.ndarray:
    """The test fold from its cached prefix activations (see tests/test_speed.py); anything else
    through the whole network, as deployed."""
    if ids is not None and model.trainer is not None and list(ids) == model.test_ids:
        probs = model.trainer.predict(model.x_test, batch_size=model.batch_size, verbose=0)
    else:
        probs = model.model.predict(as_input(images), batch_size=model.batch_size, verbose=0)
    return np.asarray(probs, dtype=np.float64)


def with_augmentation(keras, model, seed):
    """Random horizontal flips and shifts of up to 5%, active in training only."""
    inputs = keras.Input(model.input.shape[1:], name="xray_augmented")
    x = keras.layers.RandomFlip("horizontal", seed=seed, name="augment_flip")(inputs)
    x = keras.layers.RandomTranslation(0.05, 0.05, fill_mode="constant", seed=seed, name="augment_shift")(x)
    return keras.Model(inputs, model(x), name=f"{model.name}_augmented")


def boundary_tensors(base, cutoff: int) -> list:
    """Tensors computed inside the frozen prefix (layers[:cutoff]) that the rest of the network
    reads: the cut through which the cached activations pass (several with residual branches)."""
    prefix = {id(layer) for layer in base.layers[:cutoff]}
    found = {}
    consumers = list(base.layers[cutoff:])
    for layer in consumers:
        inputs = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
        for t in inputs:
            producer = t._keras_history[0]
            if id(producer) in prefix:
                found[id(t)] = t
    if not consumers:
        found[id(base.output)] = base.output
    return list(found.values())


def cached_prefix(keras, network, model, base, job, options=None):
    """Split the model at the frozen prefix; compute the prefix once per image (once per run for
    pretrained weights, once per fold for random ones); return a trainer on the activations.

    Not bit-identical to the uncached path, unlike PyTorch: TensorFlow's CPU convolutions give an
    image outputs that differ by ~1e-8 depending on the other images in its batch, so the uncached
    path itself sees a slightly different prefix output each epoch. Training amplifies that; the
    cached path stays within the spread TensorFlow shows from a change of thread count
    (benchmarks/prefix_cache.py --noise-floor, docs/performance.md)."""
    options = job.options if options is None else options  # with the resolved cutoff
    cutoff = int(options["cutoff"])
    boundary = boundary_tensors(base, cutoff)
    feeds = [keras.Input(t.shape[1:], name=f"prefix_out_{i}") for i, t in enumerate(boundary)]
    if cutoff >= len(base.layers):  # the whole backbone is frozen: only pooling and head train
        x = feeds[0]
    else:
        x = keras.Model(boundary, base.output)(feeds if len(feeds) > 1 else feeds[0])
    after_base = model.layers[model.layers.index(base) + 1 :]
    for layer in after_base:
        x = layer(x)
    trainer = keras.Model(feeds, x, name=f"{model.name}_suffix")

    train_ids, test_ids = job_ids(job)
    key = cache_key("keras", network, options, job.seed)
    t0 = time.perf_counter()
    cached = CACHE.get(key, train_ids + test_ids)
    status = "hit"
    if cached is None:
        extractor = prefix_extractor(keras, model, base, boundary)
        out = extractor.predict(
            as_input(np.concatenate([job.x_train, job.x_test])), batch_size=job.training.batch_size, verbose=0
        )
        cached = [np.asarray(a, dtype=np.float32) for a in (out if isinstance(out, (list, tuple)) else [out])]
        CACHE.put(key, train_ids + test_ids, cached)
        status = "computed"
    n = len(train_ids)
    x_train = [a[:n] for a in cached]
    x_test = [a[n:] for a in cached]
    if len(cached) == 1:
        x_train, x_test = x_train[0], x_test[0]
    info = {
        "prefix_cache": status,
        "prefix_seconds": time.perf_counter() - t0,
        "prefix_boundary": [list(t.shape[1:]) for t in boundary],
    }
    return trainer, x_train, x_test, info


def prefix_extractor(keras, model, base, boundary):
    """Image -> boundary tensors: gray_to_rgb, preprocessing and the frozen prefix; needed only on
    a cache miss."""
    inp = keras.Input(model.input.shape[1:])
    rgb = model.get_layer("gray_to_rgb")([inp, inp, inp])
    return keras.Model(inp, keras.Model(base.input, boundary)(model.get_layer("imagenet_preprocess")(rgb)))


_STATISTICS = ("moving_mean", "moving_variance", "imagenet_preprocess/")


def parameter_counts(model) -> dict:
    """Learnable parameters only (BatchNorm moving statistics and the fixed preprocessing are
    state, not parameters, as in PyTorch), so the two frameworks' counts compare."""

    def learnable(w):
        return not any(s in w.path for s in _STATISTICS)

    total = int(sum(np.prod(w.shape) for w in model.weights if learnable(w)))
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights if learnable(w)))
    return {"params_total": total, "params_trainable": trainable, "params_frozen": total - trainable}


def count_macs(model) -> int:
    """Multiply-accumulates per image of convolutions and dense layers (batch norm, pooling and
    activations are left out, as timm and most papers do)."""
    macs = 0
    for layer in _leaf_layers(model):
        name = type(layer).__name__
        out = getattr(layer, "output", None)
        if out is None:
            continue
        shape = tuple(d for d in out.shape[1:])
        if name == "Conv2D":
            kh, kw = layer.kernel_size
            cin = layer.input.shape[-1]
            macs += shape[0] * shape[1] * kh * kw * cin * layer.filters // layer.groups
        elif name == "DepthwiseConv2D":
            kh, kw = layer.kernel_size
            macs += shape[0] * shape[1] * kh * kw * shape[2]
        elif name == "SeparableConv2D":
            kh, kw = layer.kernel_size
            cin = layer.input.shape[-1]
            macs += (
                shape[0]
                * shape[1]
                * (kh * kw * cin * layer.depth_multiplier + cin * layer.depth_multiplier * layer.filters)
            )
        elif name == "Dense":
            macs += int(np.prod(layer.input.shape[1:])) * layer.units
    return int(macs)


def _leaf_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _leaf_layers(layer)
        else:
            yield layer


def describe(network: str, options) -> dict:
    keras = import_keras()
    model, base = build_model(network, {**options, "weights": "none"}, num_classes=3, seed=0)
    cutoff = frozen_cutoff(network, options, base)
    counts = parameter_counts(model)
    if network in APPS:
        cls = APPS[network].cls
        preprocessing = (
            "grayscale x3, BGR mean subtraction (Caffe)"
            if APPS[network].preprocessing == "caffe"
            else "grayscale x3, x/127.5 - 1"
        )
    else:
        cls = application(network)[0]
        preprocessing = "grayscale x3, " + preprocess_affine(keras, network)[2]
    facts = {
        "framework": "keras",
        "model": f"keras.applications.{cls}",
        "depth": f"{len(base.layers)} Keras layers",
    }
    if "freeze" in options:
        units = [layer for layer in base.layers if layer.weights]
        frozen_units = sum(1 for layer in base.layers[:cutoff] if layer.weights)
        facts["freeze"] = options["freeze"] if options.get("cutoff", 0) == 0 else f"cutoff {options['cutoff']}"
        facts["frozen_layers"] = (
            f"{frozen_units} of {len(units)} weight-carrying layers ({cutoff} of {len(base.layers)} Keras layers)"
        )
    facts.update(
        {
            "cutoff": cutoff,
            "last_frozen_layer": base.layers[cutoff - 1].name if cutoff else "(none)",
            "first_trained_layer": next((layer.name for layer in base.layers[cutoff:] if layer.weights), "(none)"),
            **counts,
            "input_size": list(options["input_size"]),
            "preprocessing": preprocessing,
            "gmacs": round(count_macs(model) / 1e9, 3),
            "head": list(options["head"]),
            "pooling": options["pooling"],
            "weights": options["weights"],
        }
    )
    if network in APPS:
        del facts["first_trained_layer"]  # the study's describe stays as it was
    return facts


def bench_steps(network, options, batch_size, device, amp, channels_last, train):
    """Compiled inference (predict_on_batch) or training (train_on_batch) steps on random inputs.
    ``channels_last`` is Keras's native layout; ``amp`` uses the mixed_bfloat16 (CPU) or
    mixed_float16 (GPU) policy."""
    keras = import_keras()
    if device == "cuda" and not _tf_gpus():
        raise BenchboxError("keras: --device cuda, but TensorFlow sees no GPU (tensorflow-cpu is installed?)")
    policy = ("mixed_float16" if device == "cuda" else "mixed_bfloat16") if amp else "float32"
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        import tensorflow as tf

        with tf.device("/GPU:0" if device == "cuda" else "/CPU:0"):
            model, _ = build_model(network, {**options, "weights": "none"}, 3, seed=0)
            h, w = (int(v) for v in options["input_size"])
            x = np.random.default_rng(0).uniform(0, 255, (batch_size, h, w, 1)).astype("float32")
            y = np.arange(batch_size) % 3
            if train:
                model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
                step = lambda: model.train_on_batch(x, y)  # noqa: E731  returns numpy: synchronised
            else:
                step = lambda: model.predict_on_batch(x)  # noqa: E731
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    return {
        "steps": _steps(step),
        "params": parameter_counts(model)["params_total"],
        "gmacs": round(count_macs(model) / 1e9, 3),
    }


def _steps(step):
    from benchbox.bench import Steps

    return Steps(step=step)


def _tf_gpus():
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")
