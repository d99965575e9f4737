"""Keras 3 backbones: the study's five networks from keras.applications, and the ``keras``
family: ``keras/<application>`` for every other keras.applications network (families.py).

Importing this module does not import Keras; the engine (engine.py) does, when a model is built.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchbox import hookimpl
from benchbox.contracts import CliOption
from benchbox_engine_common.networks import KERAS_ALPHAS, NetworkBackbone, keras_layers, weights_kind
from benchbox_keras import backends

INSTALL = "pip install 'benchbox[keras]'  (Keras 3 with TensorFlow; or Keras over JAX/PyTorch, see docs/backbones.md)"
URL_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class KerasApp:
    cls: str  # keras.applications class
    preprocessing: str  # "tf": x/127.5 - 1; "caffe": BGR mean subtraction
    notop_file: str
    file_hash: str | None


APPS = {
    "vgg19": KerasApp(
        "VGG19", "caffe", "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5", "253f8cb515780f3b799900260a226db6"
    ),
    "mobilenet_v2": KerasApp(
        "MobileNetV2",
        "tf",
        "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{rows}_no_top.h5",
        None,
    ),
    "inception_v3": KerasApp(
        "InceptionV3",
        "tf",
        "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "bcbd6486424b2319ff4ef7d526e38f63",
    ),
    "xception": KerasApp(
        "Xception",
        "tf",
        "xception/xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "b0042744bf5b25fce3cb969f33bebb97",
    ),
    "inception_resnet_v2": KerasApp(
        "InceptionResNetV2",
        "tf",
        "inception_resnet_v2/inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "d19885ff4a710c122648d3b5c3b684e4",
    ),
}


def imagenet_file(network: str, options) -> tuple[str, str, str | None]:
    """(file name in the Keras cache, download URL, md5) of the no-top ImageNet weights."""
    app = APPS[network]
    rel = app.notop_file
    if network == "mobilenet_v2":
        h, w = options["input_size"]
        rows = h if h == w and h in (96, 128, 160, 192, 224) else 224  # as keras.applications chooses
        rel = rel.format(alpha=float(options["alpha"]), rows=rows)
    return rel.rsplit("/", 1)[1], URL_BASE + rel, app.file_hash


class KerasBackbone(NetworkBackbone):
    framework = "keras"

    def __init__(self, network: str):
        self.network = network
        super().__init__()
        self.description = f"keras.applications.{APPS[network].cls}, cutoff + dense head"
        self.defaults["backend"] = (
            "auto"  # Keras backend: auto (KERAS_BACKEND, else TensorFlow), tensorflow, jax, torch
        )

    def availability(self):
        return backends.availability(INSTALL)

    def check_options(self, options):
        problems = super().check_options(options) + backends.option_problems(options)
        depth = len(keras_layers(self.network))
        cutoff = options.get("cutoff")
        if isinstance(cutoff, int) and cutoff > depth:
            problems.append(
                f"cutoff: {cutoff} is beyond the depth of {self.network} ({depth} Keras layers); "
                f"choose cutoff <= {depth}"
            )
        alpha = options.get("alpha")
        if self.network == "mobilenet_v2" and isinstance(alpha, (int, float)) and float(alpha) not in KERAS_ALPHAS:
            problems.append(
                f"alpha: {alpha} is not a width keras.applications.MobileNetV2 supports; choose one of "
                f"{', '.join(map(str, KERAS_ALPHAS))}"
            )
        return problems

    def prepare(self, options):
        backends.select_backend(options, self.name)  # before Keras is imported: pins the process's backend
        from benchbox_keras import engine

        engine.ensure_weights(self.network, options)

    def fit(self, job):
        from benchbox_keras import engine

        return engine.fit(self.network, job)

    def predict(self, model, images, ids=None):
        from benchbox_keras import engine

        return engine.predict_images(model, images, ids)

    def info(self, model):
        return dict(model.info)

    def explain(self, model, images, target_classes, layer="auto"):
        from benchbox_keras import engine, gradcam  # the whole model, even when a suffix trained on cached activations

        engine.check_current(model)
        with model.scope():
            return gradcam.explain(model.net, images, target_classes, layer, model.batch_size)

    def feature_maps(self, options):
        backends.select_backend(options, self.name)  # as prepare does, before Keras is imported
        from benchbox_keras import gradcam

        return gradcam.feature_maps(self.network, options)

    def embed(self, images, options, training=None):
        """Pooled features of the frozen network (the ``pooling`` layer fine-tuning's head reads): embed.py."""
        from benchbox_keras import embed

        return embed.embed(self.network, options, images, training)

    def embed_identity(self, options):
        from benchbox_keras import embed

        return embed.identity(self.network, options)

    def bench_steps(self, options, batch_size, device, amp, channels_last, train):
        backends.select_backend(options, self.name)
        from benchbox_keras import engine

        return engine.bench_steps(self.network, options, batch_size, device, amp, channels_last, train)

    def describe(self, options, input_size):
        backends.select_backend(options, self.name)
        from benchbox_keras import engine

        return engine.describe(self.network, {**options, "input_size": list(input_size)})


@hookimpl
def benchbox_backbones():
    return [KerasBackbone(network) for network in APPS]


from benchbox_keras.families import KerasFamily  # noqa: E402  (it subclasses KerasBackbone)


@hookimpl
def benchbox_cli_options():
    """--keras-backend for `run` and `bench`: the core knows no framework, so the option is this plugin's."""
    return [
        CliOption(
            "--keras-backend",
            "Keras backend for keras/* backbones: tensorflow, jax or torch (sets KERAS_BACKEND).",
            backends.choose_backend,
        )
    ]


@hookimpl
def benchbox_backbone_families():
    """keras/<application>; the study's five above stay explicit and win over the family's."""
    return [KerasFamily()]


__all__ = ["KerasBackbone", "KerasFamily", "APPS", "imagenet_file", "weights_kind"]
