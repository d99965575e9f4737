"""The Keras 3 engine: build backbone + cutoff + head, train on a fold, predict the other.

Model layout: input (H, W, 1) in 0..255 -> gray_to_rgb -> imagenet_preprocess (the network's
own: x/127.5-1, or Caffe mean subtraction for VGG; for a ``keras/<application>`` family member,
the affine map its module's ``preprocess_input`` applies to a gray pixel) -> keras.applications
base (layers[:cutoff] frozen; a frozen BatchNormalization runs in inference mode in Keras 3 and a
frozen Dropout is switched off; the others update their moving statistics with PyTorch's
momentum, see BN_MOMENTUM) -> global pooling -> hidden Dense(ReLU) layers, Dropout between them
when there are two or more -> Dense softmax.

Colour (a data set with ``color = "rgb"``: the fold's images are (N, H, W, 3)): the input is
(H, W, 3), named "image", with no gray_to_rgb; networks whose preprocessing swaps RGB to BGR (Caffe
mode: VGG, ResNet50) get an ``rgb_to_bgr`` layer before the per-channel mean subtraction, so each
channel is normalised with its own ImageNet statistics. Grayscale images given to a colour model
(an external grayscale data set) are repeated to 3 channels; colour images given to a grayscale
model are reduced to their luma (``as_input``).

The study's five networks (``APPS``) and every other keras.applications network (families.py)
build, train, cache, bench and describe through the same functions, keyed by the model name; for
a family member the cutoff comes from its ``freeze`` option (``frozen_cutoff``).

Backends: the same code runs on Keras's TensorFlow, JAX and PyTorch backends (backends.py picks
one per process). Device and precision (``training.device``, ``training.precision``) go through
``keras.device`` and Keras dtype policies (``Runtime``): "mixed" builds the model under
mixed_float16 on a GPU (loss scaling by Keras), mixed_bfloat16 on the CPU, the output layer in
float32; the global policy is restored after each build.

No per-fold rebuild (``MODELS``): a cell's model is built and compiled once; each later fold builds
only a fresh, uncompiled twin with its own seed (the same seeded construction as a fresh build),
copies the twin's variables (weights, BatchNorm moving statistics, dropout and augmentation seed
states) into the kept model, and restores the optimizer's variables to their state before the first
step; the compiled train and predict functions are kept, so Keras does not trace again.
``BENCHBOX_REBUILD_EACH_FOLD=1`` builds and compiles every fold afresh (benchmarks/fold_overhead.py).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchbox.contracts import FoldJob, balanced_class_weights
from benchbox.data.images import to_channels
from benchbox.errors import BenchboxError, WeightsError
from benchbox_engine_common.fold_engine import FoldEngine, FoldInputs, ModelCache, TrainedModel, options_fingerprint
from benchbox_engine_common.networks import BN_MOMENTUM, check_weights_file, weights_kind
from benchbox_engine_common.prefix_cache import CACHE, cache_key, fallback_reason, host_round_trip_reason, job_ids
from benchbox_keras import APPS, backends, imagenet_file
from benchbox_keras.applications import application, frozen_cutoff, imagenet_download, preprocess_affine
from benchbox_keras.backends import import_keras

CAFFE_MEAN = [103.939, 116.779, 123.68]


def seed_everything(keras, seed: int) -> None:
    """``keras.utils.set_random_seed`` (Python, NumPy, Keras's global seed generator, PyTorch on the
    torch backend) without TensorFlow's global seed: ``tf.random.set_seed`` clears TensorFlow's
    function caches, so a kept model's compiled train step would be instantiated again (seconds)
    every fold. Nothing here reads that seed: Keras initializers and layers draw from Keras seeds,
    and the engine shuffles with NumPy."""
    try:
        from keras.src.backend.common import global_state
        from keras.src.random import seed_generator
        from keras.src.utils import rng_utils

        global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
        global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    except (ImportError, AttributeError):  # another Keras layout: the public call, TensorFlow's seed too
        keras.utils.set_random_seed(seed)
        return
    import random

    random.seed(seed)
    np.random.seed(seed)
    if keras.backend.backend() == "torch":
        import torch

        torch.manual_seed(seed)


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


def _swaps_to_bgr(keras, network: str) -> bool:
    """Whether the network's ImageNet preprocessing reverses the channels (RGB in, BGR out, as
    Caffe mode does), probed on one pure-colour pixel per channel; an error when it mixes them."""
    if network in APPS:
        return APPS[network].preprocessing == "caffe"
    cls, module = application(network)
    preprocess = getattr(keras.applications, module).preprocess_input
    probe = np.zeros((4, 1, 1, 3), dtype="float32")
    for c in range(3):
        probe[c + 1, 0, 0, c] = 255.0
    y = np.asarray(preprocess(probe.copy()), dtype="float64").reshape(4, 3)
    response = np.abs(y[1:] - y[0]) > 1e-6  # [input channel, output channel]
    if (response == np.eye(3, dtype=bool)).all():
        return False
    if (response == np.eye(3, dtype=bool)[::-1]).all():
        return True
    raise BenchboxError(
        f"keras/{network}: keras.applications.{module}.preprocess_input mixes the colour channels; the Keras "
        f'engine cannot feed it colour images: use color = "gray" for this network'
    )


def _input_layers(keras, network: str, h: int, w: int, channels: int):
    """(input, RGB tensor before the preprocessing) of the engine's layout for 1 or 3 channels."""
    if channels == 3:
        inputs = keras.Input((h, w, 3), name="image")
        if _swaps_to_bgr(keras, network):  # colour RGB -> the BGR the network was trained on
            return inputs, keras.layers.Lambda(lambda t: keras.ops.flip(t, axis=-1), name="rgb_to_bgr")(inputs)
        return inputs, inputs
    inputs = keras.Input((h, w, 1), name="xray")
    return inputs, keras.layers.Concatenate(name="gray_to_rgb")([inputs, inputs, inputs])


def _preprocess_layer(keras, network):
    if network not in APPS:
        mean, variance, _ = preprocess_affine(keras, network)
        return keras.layers.Normalization(mean=mean, variance=variance, name="imagenet_preprocess")
    if APPS[network].preprocessing == "caffe":
        # grayscale repeated to 3 channels, so the RGB->BGR swap is a no-op; subtract BGR means
        return keras.layers.Normalization(mean=CAFFE_MEAN, variance=[1.0, 1.0, 1.0], name="imagenet_preprocess")
    return keras.layers.Normalization(mean=127.5, variance=127.5**2, name="imagenet_preprocess")


def build_model(network: str, options, num_classes: int, seed: int, channels: int = 1):
    """The full model and its base; cutoff applied, weights loaded. ``channels``: 1 for grayscale
    input (H, W, 1), repeated to RGB inside the model; 3 for colour input (H, W, 3)."""
    keras = import_keras()
    seed_everything(keras, seed)
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
    # under a mixed policy the output layer computes (and its softmax runs) in float32
    final_dtype = "float32" if keras.config.dtype_policy().compute_dtype != "float32" else None
    inputs, x = _input_layers(keras, network, h, w, channels)
    x = _preprocess_layer(keras, network)(x)
    x = base(x)
    pool = keras.layers.GlobalAveragePooling2D if options["pooling"] == "avg" else keras.layers.GlobalMaxPooling2D
    x = pool(name="pooling")(x)
    head = list(options["head"])
    for i, units in enumerate(head):
        x = keras.layers.Dense(units, activation="relu", name=f"head_dense_{i + 1}")(x)
        if len(head) >= 2 and i < len(head) - 1:
            x = keras.layers.Dropout(float(options["dropout"]), name=f"head_dropout_{i + 1}")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions", dtype=final_dtype)(x)
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


class _StepClock:
    """Times each training or prediction step (batch begin to batch end, the step's results read
    back by Keras in between). The first step of a call also traces/compiles when the function is
    new; it is counted at the median step's time and its excess reported as ``warmup``."""

    def __init__(self, keras):
        clock = self
        self.times: list[float] = []
        self._t0 = 0.0

        class Callback(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):
                clock._t0 = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                clock.times.append(time.perf_counter() - clock._t0)

            on_predict_batch_begin = on_train_batch_begin
            on_predict_batch_end = on_train_batch_end

        self.callback = Callback()

    def seconds(self) -> tuple[float, float]:
        """(steps, warm-up excess of the first step)."""
        if not self.times:
            return 0.0, 0.0
        if len(self.times) == 1:
            return self.times[0], 0.0
        typical = statistics.median(self.times[1:])
        excess = max(0.0, self.times[0] - typical)
        return sum(self.times) - excess, excess


def as_input(x: np.ndarray, channels: int = 1) -> np.ndarray:
    """uint8 images (N, H, W) or (N, H, W, 3) as a model with ``channels`` input channels takes
    them: float32 (N, H, W, 1) or (N, H, W, 3); grayscale repeated or colour reduced to its luma
    when the images have the other kind."""
    x = to_channels(x, channels).astype("float32")
    return x[..., None] if channels == 1 else x


def input_channels(model) -> int:
    """1 or 3: what the engine's model (or its augmentation wrapper) takes."""
    return int(model.input.shape[-1])


# --- device and precision ------------------------------------------------------------------
def gpu_available(keras) -> bool:
    """Whether the running Keras backend sees a GPU."""
    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            return bool(tf.config.list_physical_devices("GPU"))
        if backend == "jax":
            import jax

            return any(d.platform == "gpu" for d in jax.devices())
        if backend == "torch":
            import torch

            return torch.cuda.is_available()
    except Exception:  # a backend without GPU support at all
        return False
    return False


@dataclass(frozen=True)
class Runtime:
    """Where a fold computes and under which dtype policy its model is built. ``pinned``: the device
    is not the backend's default (the CPU on a machine with a GPU), so work runs in ``keras.device``;
    otherwise no scope at all (Keras's torch backend turns parameters created under a scope into
    non-leaf tensors when the scope's name differs from its default, and then cannot freeze them)."""

    backend: str
    device: str  # "cpu:0" or "gpu:0"
    mixed: bool = False
    pinned: bool = False

    @property
    def gpu(self) -> bool:
        return self.device.startswith("gpu")

    @property
    def policy(self) -> str:
        if not self.mixed:
            return "float32"
        return "mixed_float16" if self.gpu else "mixed_bfloat16"

    def scope(self):
        if not self.pinned:
            return contextlib.nullcontext()
        name = self.device.split(":")[0] if self.backend == "torch" else self.device
        return import_keras().device(name)

    @contextlib.contextmanager
    def building(self):
        """The dtype policy for a model's construction and compile; the previous one restored after."""
        keras = import_keras()
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(self.policy)
        try:
            yield
        finally:
            keras.config.set_dtype_policy(previous)

    def info(self) -> dict:
        return {
            "keras_backend": self.backend,
            "device": self.device,
            "precision": "mixed" if self.mixed else "fp32",
            "dtype_policy": self.policy,
        }


def runtime(keras, training, who: str) -> Runtime:
    device = getattr(training, "device", "auto")
    precision = getattr(training, "precision", "fp32")
    if device not in ("auto", "cpu", "cuda"):
        raise BenchboxError(f'{who}: training.device = {device!r}; use "auto", "cpu" or "cuda"')
    if precision not in ("fp32", "mixed"):
        raise BenchboxError(f'{who}: training.precision = {precision!r}; use "fp32" or "mixed"')
    backend = keras.backend.backend()
    has_gpu = gpu_available(keras)
    gpu = has_gpu and device != "cpu"
    if device == "cuda" and not gpu:
        raise BenchboxError(
            f'{who}: training.device = "cuda", but Keras\'s {backend} backend sees no GPU. Set training.device = '
            f'"auto" or "cpu", or put Keras on a GPU (docs/backbones.md, "Keras backends": --keras-backend jax '
            f"with pip install 'jax[cuda12]', tensorflow[and-cuda], or --keras-backend torch over a CUDA build "
            f"of PyTorch)"
        )
    return Runtime(backend, "gpu:0" if gpu else "cpu:0", precision == "mixed", pinned=gpu != has_gpu)


# --- one build per cell -------------------------------------------------------------------
@dataclass
class _Built:
    """A cell's model, built and compiled once, and what training it needs."""

    model: Any  # the whole network (input -> probabilities)
    base: Any
    full: Any  # ``model``, or the augmentation wrapper around it: the variables a fold resets
    trainer: Any  # the compiled model that trains: the suffix on cached activations, or ``full``
    options: dict  # with the resolved cutoff
    reason: str | None  # why the prefix cache is off, None when on
    info: dict
    optimizer_state: list = field(default_factory=list)  # the optimizer's variables before any step
    extractor: Any = None  # image -> prefix activations, made on the first cache miss
    generation: int = 0  # folds trained so far; a TrainedModel of an earlier fold is stale


def _construct(keras, network: str, job: FoldJob) -> tuple:
    """The seeded construction of a fold's model: (model, base, full)."""
    model, base = build_model(network, job.options, job.num_classes, job.seed, job.channels)
    full = with_augmentation(keras, model, job.seed) if job.training.augment else model
    return model, base, full


def _build(keras, network: str, job: FoldJob, rt: Runtime) -> _Built:
    with rt.building():
        model, base, full = _construct(keras, network, job)
        options = resolved_options(network, job.options, base)
        reason = fallback_reason(options, job.training)
        if reason is None and rt.gpu:
            cutoff = int(options["cutoff"])
            boundary = sum(int(np.prod(t.shape[1:])) for t in boundary_tensors(base, cutoff))
            reason = host_round_trip_reason(boundary, int(np.prod(model.input.shape[1:])), cutoff, len(base.layers))
        trainer = full if reason is not None else suffix_model(keras, model, base, int(options["cutoff"]))
        trainer.compile(
            optimizer=keras.optimizers.Adam(learning_rate=job.training.learning_rate),
            loss="sparse_categorical_crossentropy",
        )
        trainer.optimizer.build(trainer.trainable_variables)
    state = [np.array(keras.ops.convert_to_numpy(v.value)) for v in trainer.optimizer.variables]
    return _Built(model, base, full, trainer, options, reason, parameter_counts(model), state)


def _reset(keras, built: _Built, network: str, job: FoldJob, rt: Runtime) -> bool:
    """Put the kept model in the state a fresh build with the job's seed has; False when the
    twin does not match it variable for variable (then the caller builds afresh)."""
    with rt.building():
        _, _, twin = _construct(keras, network, job)
    mine, theirs = built.full.variables, twin.variables
    if len(mine) != len(theirs) or any(tuple(a.shape) != tuple(b.shape) for a, b in zip(mine, theirs)):
        return False
    for a, b in zip(mine, theirs):
        a.assign(b.value)
    for v, value in zip(built.trainer.optimizer.variables, built.optimizer_state):
        v.assign(value)
    return True


#: one per process, like the prefix cache; one model (a new cell's replaces the one before)
MODELS = ModelCache(size=1)


def resolved_options(network: str, options, base) -> dict:
    """The options with ``cutoff`` the number of leading base layers actually frozen (for a family
    member, what its ``freeze`` option names), which the prefix cache keys on."""
    return {**options, "cutoff": frozen_cutoff(network, options, base)}


def train_epochs(trainer, x_train, job: FoldJob, class_weight, steps: _StepClock) -> None:
    """Train ``job.training.epochs`` epochs, each on the training data in an order NumPy draws from
    the fold's seed (the same orders on every backend, and no TensorFlow seed: ``seed_everything``).
    On TensorFlow all epochs go through one ``fit`` call on one tf.data pipeline (a ``fit`` call per
    epoch costs ~0.1-0.3 s of pipeline building on 2 cores); elsewhere one ``fit`` per epoch."""
    import keras

    rng = np.random.default_rng(job.seed)
    y = np.asarray(job.y_train)
    epochs, batch = job.training.epochs, job.training.batch_size
    orders = [rng.permutation(len(y)) for _ in range(epochs)]
    if keras.backend.backend() == "tensorflow" and epochs > 0 and len(y):
        import tensorflow as tf

        per_epoch = -(-len(y) // batch)
        lengths = [min(batch, len(y) - i) for i in range(0, len(y), batch)] * epochs
        index = tf.RaggedTensor.from_row_lengths(np.concatenate(orders).astype(np.int64), lengths)
        xs = [tf.constant(a) for a in (x_train if isinstance(x_train, list) else [x_train])]
        ys = tf.constant(y)

        def gather(i):
            xb = tuple(tf.gather(a, i) for a in xs)
            return (xb if len(xb) > 1 else xb[0]), tf.gather(ys, i)

        data = tf.data.Dataset.from_tensor_slices(index).map(gather).prefetch(2)
        callbacks = [steps.callback]
        if job.progress:

            class Progress(keras.callbacks.Callback):
                def on_train_batch_end(self, step, logs=None):
                    if (step + 1) % per_epoch == 0:
                        job.progress((step + 1) // per_epoch, epochs)

            callbacks.append(Progress())
        trainer.fit(data, epochs=1, verbose=0, callbacks=callbacks, class_weight=class_weight, shuffle=False)
        return
    for epoch, order in enumerate(orders):
        x = [a[order] for a in x_train] if isinstance(x_train, list) else x_train[order]
        trainer.fit(
            x,
            y[order],
            epochs=1,
            batch_size=batch,
            shuffle=False,
            verbose=0,
            callbacks=[steps.callback],
            class_weight=class_weight,
        )
        if job.progress:
            job.progress(epoch + 1, epochs)


def whole_batches(x, batch_size: int):
    """``x`` (an array or a list of arrays) of more than one batch padded with zero rows to a multiple
    of the batch size.
    Inference treats rows independently, so the padding changes no prediction; it keeps every
    batch one shape, so TensorFlow and JAX compile the predict step once per model instead of
    once more for each new size of a fold's last batch (TensorFlow warned of retracing, and on a
    GPU the JAX compile took 20 s)."""
    arrays = x if isinstance(x, list) else [x]
    extra = -len(arrays[0]) % batch_size
    if extra == 0 or len(arrays[0]) < batch_size:  # one short batch (e.g. the throughput batch): as it is
        return x
    padded = [np.concatenate([a, np.zeros((extra, *a.shape[1:]), a.dtype)]) for a in arrays]
    return padded if isinstance(x, list) else padded[0]


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


def suffix_model(keras, model, base, cutoff: int):
    """The model from the frozen prefix's boundary tensors to the probabilities: what trains on
    cached activations (it shares its layers, and so its variables, with ``model``)."""
    boundary = boundary_tensors(base, cutoff)
    feeds = [keras.Input(t.shape[1:], name=f"prefix_out_{i}") for i, t in enumerate(boundary)]
    if cutoff >= len(base.layers):  # the whole backbone is frozen: only pooling and head train
        x = feeds[0]
    else:
        x = keras.Model(boundary, base.output)(feeds if len(feeds) > 1 else feeds[0])
    after_base = model.layers[model.layers.index(base) + 1 :]
    for layer in after_base:
        x = layer(x)
    return keras.Model(feeds, x, name=f"{model.name}_suffix")


def cached_prefix(keras, network, built: _Built, job, rt: Runtime):
    """The frozen prefix's activations of the fold's images, computed once per image (once per run
    for pretrained weights, once per fold for random ones): (train inputs, test inputs, info).

    Not bit-identical to the uncached path, unlike PyTorch: TensorFlow's CPU convolutions give an
    image outputs that differ by ~1e-8 depending on the other images in its batch, so the uncached
    path itself sees a slightly different prefix output each epoch. Training amplifies that; the
    cached path stays within the spread TensorFlow shows from a change of thread count
    (benchmarks/prefix_cache.py --noise-floor, docs/performance.md)."""
    options = built.options  # with the resolved cutoff
    boundary = boundary_tensors(built.base, int(options["cutoff"]))
    train_ids, test_ids = job_ids(job)
    # the same image ids may be loaded gray or RGB (color option): their activations differ
    colour = ":rgb" if job.channels == 3 else ""
    key = cache_key(f"keras:{rt.backend}:{rt.device}:{rt.policy}{colour}", network, options, job.seed)
    t0 = time.perf_counter()
    cached = CACHE.get(key, train_ids + test_ids)
    status = "hit"
    if cached is None:
        if built.extractor is None:
            built.extractor = prefix_extractor(keras, built.model, built.base, boundary)
        out = built.extractor.predict(
            as_input(np.concatenate([job.x_train, job.x_test]), job.channels),
            batch_size=job.training.batch_size,
            verbose=0,
        )
        out = out if isinstance(out, (list, tuple)) else [out]
        cached = [np.asarray(keras.ops.convert_to_numpy(a), dtype=np.float32) for a in out]
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
    return x_train, x_test, info


def prefix_extractor(keras, model, base, boundary):
    """Image -> boundary tensors: gray_to_rgb (or, for colour, rgb_to_bgr where the network wants
    BGR), preprocessing and the frozen prefix; needed only on a cache miss."""
    inp = keras.Input(model.input.shape[1:])
    x = inp
    for layer in model.layers[: model.layers.index(base)]:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        x = layer([x, x, x]) if isinstance(layer, keras.layers.Concatenate) else layer(x)
    return keras.Model(inp, keras.Model(base.input, boundary)(x))


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


# --- the fold lifecycle's Keras steps (the lifecycle itself: benchbox_engine_common.fold_engine) --------
class KerasEngine(FoldEngine):
    """A fold through Keras: the target is the network's name (``keras/<name>``)."""

    name = "keras"

    def models(self) -> ModelCache:
        return MODELS

    def runtime(self, network: str, job: FoldJob) -> Runtime:
        backends.select_backend(job.options, f"keras/{network}")
        return runtime(import_keras(), job.training, f"keras/{network}")

    def cache_key(self, network: str, job: FoldJob, rt: Runtime) -> tuple:
        """The name, options, class count, backend, device and dtype policy, learning rate and augmentation."""
        text, stamp = options_fingerprint(job.options, weights_kind)
        training = (float(job.training.learning_rate), bool(job.training.augment), job.training.optimizer)
        return (network, text, stamp, int(job.num_classes), rt, training, job.channels)

    def build(self, network: str, job: FoldJob, rt: Runtime) -> _Built:
        return _build(import_keras(), network, job, rt)

    def reset(self, built: _Built, network: str, job: FoldJob, rt: Runtime) -> bool:
        return _reset(import_keras(), built, network, job, rt)

    def cached_inputs(self, network: str, built: _Built, job: FoldJob, rt: Runtime) -> FoldInputs | str:
        if built.reason is not None:
            return built.reason
        x_train, x_test, info = cached_prefix(import_keras(), network, built, job, rt)
        return FoldInputs(built.trainer, x_train, x_test, info)

    def whole_inputs(self, built: _Built, job: FoldJob) -> FoldInputs:
        return FoldInputs(built.trainer, as_input(job.x_train, job.channels))

    def train(self, trainer, x_train, job: FoldJob, rt: Runtime) -> dict:
        keras = import_keras()
        seed_everything(keras, job.seed)
        class_weight = None
        if job.training.class_weight == "balanced":
            class_weight = dict(enumerate(balanced_class_weights(job.y_train, job.num_classes).tolist()))
        steps = _StepClock(keras)
        train_epochs(trainer, x_train, job, class_weight, steps)
        loop, warmup = steps.seconds()
        return {"train_loop_seconds": loop, "train_warmup_seconds": warmup}

    def whole_net(self, built: _Built):
        return built.model

    def predict(self, model: TrainedModel, images: np.ndarray, cached: bool) -> tuple[np.ndarray, dict]:
        """Cached activations: not bit-identical to the whole network on TensorFlow (``cached_prefix``)."""
        keras = import_keras()
        steps = _StepClock(keras)
        if cached:
            net, x = model.trainer, model.test_inputs
        else:
            net, x = model.net, as_input(images, input_channels(model.net))
        n = len(x[0]) if isinstance(x, list) else len(x)
        probs = net.predict(
            whole_batches(x, model.batch_size), batch_size=model.batch_size, verbose=0, callbacks=[steps.callback]
        )
        loop, warmup = steps.seconds()
        probs = keras.ops.convert_to_numpy(probs) if not isinstance(probs, np.ndarray) else probs
        return np.asarray(probs[:n], np.float64), {"predict_loop_seconds": loop, "predict_warmup_seconds": warmup}

    def network_facts(self, network: str, options) -> dict:
        keras = import_keras()
        model, base = build_model(network, {**options, "weights": "none"}, num_classes=3, seed=0)
        cutoff = frozen_cutoff(network, options, base)
        if network in APPS:
            cls = APPS[network].cls
            preprocessing = (
                "grayscale x3 (RGB as is), BGR mean subtraction (Caffe)"
                if APPS[network].preprocessing == "caffe"
                else "grayscale x3 (RGB as is), x/127.5 - 1"
            )
        else:
            cls = application(network)[0]
            preprocessing = "grayscale x3 (RGB as is), " + preprocess_affine(keras, network)[2]
        facts = {"model": f"keras.applications.{cls}", "depth": f"{len(base.layers)} Keras layers"}
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
                **parameter_counts(model),
                "input_size": list(options["input_size"]),
                "preprocessing": preprocessing,
                "gmacs": round(count_macs(model) / 1e9, 3),
            }
        )
        if network in APPS:
            del facts["first_trained_layer"]  # the study's describe stays as it was
        return facts

    def gpu_problem(self) -> str | None:
        keras = import_keras()
        if gpu_available(keras):
            return None
        return (
            f"keras: --device cuda, but Keras's {keras.backend.backend()} backend sees no GPU (tensorflow-cpu "
            f'installed? a CPU build of PyTorch or JAX?); docs/backbones.md, "Keras backends", says how to put '
            f"Keras on a GPU"
        )

    def bench_model(self, network: str, options, batch_size, device, amp, channels_last, train):
        """Compiled inference (predict_on_batch) or training (train_on_batch) steps, on whichever Keras
        backend runs (``keras.device``). ``channels_last`` is Keras's native layout; ``amp`` uses the
        mixed_bfloat16 (CPU) or mixed_float16 (GPU) policy. The step returns numpy: synchronised."""
        keras = import_keras()
        gpu = device == "cuda"
        rt = Runtime(
            keras.backend.backend(), "gpu:0" if gpu else "cpu:0", bool(amp), pinned=gpu != gpu_available(keras)
        )
        with rt.scope():
            with rt.building():
                model, _ = build_model(network, options, 3, seed=0)
                if train:
                    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
                    # the optimizer's variables made inside the first compiled step make TensorFlow trace it
                    # twice (measured: 17.1 s -> 8.7 s for MobileNet v2's first step on one CPU thread)
                    model.optimizer.build(model.trainable_variables)
            h, w = (int(v) for v in options["input_size"])
            x = np.random.default_rng(0).uniform(0, 255, (batch_size, h, w, 1)).astype("float32")
            y = np.arange(batch_size) % 3

        def step():
            with rt.scope():
                return model.train_on_batch(x, y) if train else model.predict_on_batch(x)

        return step, lambda: None, parameter_counts(model)["params_total"], round(count_macs(model) / 1e9, 3)


ENGINE = KerasEngine()
fit, predict_images, check_current = ENGINE.fit, ENGINE.predict_images, ENGINE.check_current
describe, bench_steps = ENGINE.describe, ENGINE.bench_steps
