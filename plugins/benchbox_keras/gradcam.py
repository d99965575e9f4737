"""Grad-CAM of a fold's Keras model, by hand through Keras's own gradients.

Grad-CAM (Selvaraju et al. 2017): the gradient of the class score (the logit, before the
softmax) with respect to a convolutional feature map, averaged over space, weights each channel
of that map; their weighted sum, through a ReLU, is the heat map. The feature map is the
backbone's output by default ("auto": the last feature map, the one the head pools), or any
layer of the keras.applications base named by ``layer``.

The forward pass uses Keras layers and ``keras.ops`` only; the gradient is the one
backend-specific step (``_gradient``): TensorFlow's GradientTape, ``torch.autograd.grad`` on the
PyTorch backend, ``jax.grad`` on JAX. On JAX only the default feature map ("auto", the base's
output) is supported: the gradient is taken of the head as a function of that map, and an inner
layer's map is not an input of anything JAX can differentiate separately; other layers say so.
"""

from __future__ import annotations

import numpy as np

from benchbox.errors import BenchboxError


def _parts(keras, model):
    """(layers before the base, the base, layers after it) of the engine's model layout
    (benchbox_keras/engine.py: input -> gray_to_rgb (or, for colour input, nothing or rgb_to_bgr) ->
    preprocessing -> base -> pooling -> head),
    with the training-time augmentation wrapper, if any, removed."""
    inner = model
    for layer in model.layers:  # with_augmentation wraps the model: explain the model itself
        if isinstance(layer, keras.Model) and layer.name.startswith("benchbox_"):
            inner = layer
    layers = [layer for layer in inner.layers if not isinstance(layer, keras.layers.InputLayer)]
    nested = [i for i, layer in enumerate(layers) if isinstance(layer, keras.Model)]
    if not nested:
        raise NotImplementedError(f"{inner.name}: no backbone sub-model found to explain")
    i = nested[0]
    return layers[:i], layers[i], layers[i + 1 :]


def feature_maps(network: str, options) -> list[tuple[str, tuple[int, int]]]:
    """Every layer of the keras.applications base whose output is a feature map (N, h, w, C) at
    ``options["input_size"]``, as (name, (h, w)) in the base's order: the names [explain] layer may give
    (``Backbone.feature_maps``). Random weights; Python's and NumPy's global RNGs are left as they were."""
    import random

    from benchbox_keras.engine import build_model

    states = random.getstate(), np.random.get_state()
    try:
        _, base = build_model(network, {**options, "weights": "none"}, num_classes=3, seed=0)
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
    out = []
    for layer in base.layers:
        try:
            shape = tuple(layer.output.shape)
        except (AttributeError, ValueError):  # a layer without one output
            continue
        if len(shape) == 4 and shape[1] is not None and shape[2] is not None:
            out.append((layer.name, (int(shape[1]), int(shape[2]))))
    return out


def _features(keras, base, layer: str):
    """A function image batch -> (feature map, base output)."""
    if layer == "auto":
        return lambda x: (lambda f: (f, f))(base(x, training=False))
    try:
        target = base.get_layer(layer)
    except ValueError:
        names = [lay.name for lay in base.layers if len(getattr(lay.output, "shape", ())) == 4][-5:]
        raise BenchboxError(
            f'[explain] layer = {layer!r}: no such layer in {base.name}; use "auto" or a layer name such as '
            f"{', '.join(names)}"
        ) from None
    if len(target.output.shape) != 4:
        raise BenchboxError(
            f"[explain] layer = {layer!r} is not a feature map (its output has shape {target.output.shape})"
        )
    sub = keras.Model(base.inputs, [target.output, base.output])
    return lambda x: tuple(sub(x, training=False))


def _gradient(keras, forward, x, head=None):
    """(feature map, d sum(target scores) / d feature map) for one batch, on the active backend.
    ``head``: the score as a function of the feature map alone (the "auto" layer), or None."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            fmap, score = forward(x, tape.watch)
        return fmap, tape.gradient(score, fmap)
    if backend == "torch":
        import torch

        x = x.detach().requires_grad_(True)  # so that every feature map is in the graph, frozen or not
        with torch.enable_grad():
            fmap, score = forward(x, lambda t: None)
            (grads,) = torch.autograd.grad(score, fmap)
        return fmap.detach(), grads
    if backend == "jax" and head is not None:
        import jax

        fmap, _ = forward(x, lambda t: None)
        return fmap, jax.grad(head)(fmap)
    if backend == "jax":
        raise BenchboxError(
            '[explain] layer: on the JAX backend Grad-CAM takes the default feature map only; set layer = "auto" '
            "(or run with --keras-backend tensorflow or torch for an inner layer)"
        )
    raise NotImplementedError(
        f"Grad-CAM for the Keras {backend!r} backend is not written (TensorFlow, PyTorch and JAX are)"
    )


def explain(model, images: np.ndarray, target_classes, layer: str = "auto", batch_size: int = 16) -> np.ndarray:
    """Heat maps (N, h, w) in [0, 1] of a Keras model for uint8 images (N, H, W) or (N, H, W, 3),
    one per image for its class."""
    from benchbox_keras.engine import as_input, import_keras, input_channels

    keras = import_keras()
    ops = keras.ops
    before, base, after = _parts(keras, model)
    features = _features(keras, base, layer)
    last = after[-1] if after else None
    if last is None or getattr(last, "kernel", None) is None:
        raise NotImplementedError(f"{model.name}: the last layer is not a dense classifier; cannot take its logits")
    out = []
    for start in range(0, len(images), batch_size):
        x = ops.convert_to_tensor(as_input(np.asarray(images[start : start + batch_size]), input_channels(model)))
        for lay in before:
            x = lay([x, x, x]) if isinstance(lay, keras.layers.Concatenate) else lay(x, training=False)
        targets = ops.convert_to_tensor(np.asarray(target_classes[start : start + batch_size], dtype="int32"))

        def score(h, targets=targets):
            for lay in after[:-1]:
                h = lay(h, training=False)
            logits = ops.matmul(h, last.kernel) + last.bias  # the class score before the softmax
            picked = ops.take_along_axis(logits, ops.expand_dims(targets, 1), axis=1)
            return ops.sum(picked)

        def forward(inputs, watch):
            fmap, h = features(inputs)
            watch(fmap)
            return fmap, score(fmap if layer == "auto" else h)

        fmap, grads = _gradient(keras, forward, x, score if layer == "auto" else None)
        weights = ops.mean(grads, axis=(1, 2))  # (N, C): how much each channel raises the class score
        cam = ops.relu(ops.sum(fmap * weights[:, None, None, :], axis=-1))
        out.append(np.asarray(ops.convert_to_numpy(cam), dtype=np.float64))
    maps = np.concatenate(out) if out else np.zeros((0, 1, 1))
    peak = maps.max(axis=(1, 2), keepdims=True)
    return np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0)
