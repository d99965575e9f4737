"""The keras.applications catalogue, framework-light: which networks the installed Keras has (read
from its source, without importing it), their names as a user types them, how a ``freeze`` option
resolves to a count of leading layers, and what each network's ``preprocess_input`` does.

Shared by the engine (engine.py, which builds the networks) and the family (families.py, which lists
and validates them); it imports neither.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import re
from functools import cache
from pathlib import Path

import numpy as np

from benchbox.errors import BenchboxError
from benchbox_engine_common.freeze import frozen_count, parse_freeze
from benchbox_keras.backends import import_keras

_IMPORT = re.compile(r"from keras\.src\.applications\.(\w+) import \(?\s*(\w+) as \w+")


def model_name(cls: str, module: str) -> str:
    """``ResNet50`` (module resnet) -> ``resnet50``; ``EfficientNetV2B0`` (efficientnet_v2) ->
    ``efficientnet_v2_b0``; ``ResNet50V2`` (resnet_v2) -> ``resnet50_v2``."""
    flat, stem = cls.lower(), module.replace("_", "")
    if flat.startswith(stem):
        rest = flat[len(stem) :]
        return module + (rest if not rest or rest[0].isdigit() else "_" + rest)
    return re.sub(r"(?<=[0-9a-z])(?=V\d)", "_", cls).lower()


@cache
def applications() -> dict[str, tuple[str, str]]:
    """model name -> (keras.applications class, its keras.applications module)."""
    found: dict[str, tuple[str, str]] = {}
    spec = importlib.util.find_spec("keras")  # finds the package without importing it
    for location in (spec.submodule_search_locations or []) if spec else []:
        init = Path(location) / "applications" / "__init__.py"
        if init.is_file():
            for module, cls in _IMPORT.findall(init.read_text(encoding="utf-8")):
                found[model_name(cls, module)] = (cls, module)
    if not found and spec is not None:  # a Keras laid out differently: ask it (imports TensorFlow)
        apps = import_keras().applications
        for cls in dir(apps):
            obj = getattr(apps, cls)
            if cls[:1].isupper() and callable(obj):
                module = obj.__module__.rsplit(".", 1)[-1]
                found[model_name(cls, module)] = (cls, module)
    return dict(sorted(found.items()))


def application(model: str) -> tuple[str, str]:
    """(class, module) of a keras.applications network, or a BenchboxError with the closest names."""
    apps = applications()
    if model not in apps:
        close = difflib.get_close_matches(model, list(apps), n=5, cutoff=0.6)
        raise BenchboxError(
            f"keras/{model}: keras.applications has no such network"
            + (f"; did you mean {', '.join('keras/' + c for c in close)}?" if close else "")
            + " (`benchbox backbones list --framework keras` lists them)"
        )
    return apps[model]


def frozen_cutoff(network: str, options, base) -> int:
    """How many leading layers of ``base`` to freeze: the ``freeze`` option resolved on the built
    network (a fraction counts weight-carrying layers, input first; a name is the last frozen
    Keras layer), else ``cutoff``. An unknown layer name lists the closest ones."""
    depth = len(base.layers)
    spec = parse_freeze(options.get("freeze", "none"))
    if spec.kind == "none":
        cutoff = int(options.get("cutoff", 0))
        if cutoff > depth:
            raise BenchboxError(
                f"keras/{network}: cutoff {cutoff} is beyond the network's depth of "
                f"{depth} Keras layers; choose cutoff <= {depth}"
            )
        return cutoff
    if spec.kind == "all":
        return depth
    if spec.kind == "layer":
        return frozen_count(spec, [layer.name for layer in base.layers], f"keras/{network}")
    units = [i for i, layer in enumerate(base.layers) if layer.weights]
    k = frozen_count(spec, [base.layers[i].name for i in units], f"keras/{network}")
    return units[k - 1] + 1 if k else 0


def preprocess_affine(keras, network: str) -> tuple[list[float], list[float], str]:
    """What the network's own ``keras.applications.<module>.preprocess_input`` does to a gray
    pixel repeated to RGB, as (mean, variance, description) of a Normalization layer.

    Probed on 0, 77 and 255 and checked to be affine per channel (true of every mode Keras has:
    "tf" x/127.5-1, "caffe" BGR means, "torch" ImageNet mean/std, and the identity of networks
    that rescale inside themselves: EfficientNet, EfficientNetV2, ConvNeXt, MobileNetV3)."""
    cls, module = application(network)
    preprocess = getattr(keras.applications, module).preprocess_input
    x = np.array([0.0, 77.0, 255.0], dtype="float32").reshape(3, 1, 1, 1).repeat(3, axis=-1)
    y = np.asarray(preprocess(x.copy()), dtype="float64").reshape(3, 3)
    scale, offset = (y[2] - y[0]) / 255.0, y[0]
    if np.any(np.abs(scale) < 1e-12) or not np.allclose(y[1], scale * 77.0 + offset, rtol=1e-4, atol=1e-4):
        raise BenchboxError(
            f"keras/{network}: keras.applications.{module}.preprocess_input is not a per-channel affine map "
            f"of the pixel values; the Keras engine cannot apply it as a layer"
        )
    mean, std = -offset / scale, 1.0 / scale
    if np.allclose(scale, 1.0) and np.allclose(offset, 0.0):
        text = f"0..255 into the network (keras.applications.{cls} rescales inside itself)"
    else:
        text = f"keras.applications.{module}.preprocess_input: (x - {_short(mean)}) / {_short(std)}"
    return mean.tolist(), (std**2).tolist(), text


def _short(values) -> str:
    values = [round(float(v), 3) for v in values]
    return f"{values[0]:g}" if len(set(values)) == 1 else "[" + ", ".join(f"{v:g}" for v in values) + "]"


@contextlib.contextmanager
def imagenet_download():
    """Record the (file name, URL) keras.applications asks Keras's ``get_file`` for, so an
    offline failure can name them (every application calls ``file_utils.get_file``)."""
    from keras.src.utils import file_utils

    seen: list[tuple[str, str]] = []
    original = file_utils.get_file

    def recording(fname=None, origin=None, *args, **kwargs):
        seen.append((str(fname), str(origin)))
        return original(fname, origin, *args, **kwargs)

    file_utils.get_file = recording
    try:
        yield seen
    finally:
        file_utils.get_file = original
