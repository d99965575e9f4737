"""`benchbox plugin new NAME`: a ready-to-install backbone plugin package (a Keras ResNet50, as in
docs/plugins.md) with its entry point and its conformance test."""

from __future__ import annotations

import re
from pathlib import Path

from benchbox.errors import BenchboxError

PYPROJECT = """[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "A benchbox backbone plugin"
dependencies = ["benchbox", "keras>=3"]

[project.optional-dependencies]
test = ["pytest"]

[project.entry-points.benchbox]
{short} = "{module}"

[tool.setuptools]
packages = ["{module}"]
"""

MODULE = '''"""{dist}: a benchbox backbone plugin (keras.applications.ResNet50, frozen up to `cutoff`)."""

import numpy as np

from benchbox import hookimpl
from benchbox.contracts import Availability, Backbone
from benchbox.data.images import to_channels


class KerasResNet50(Backbone):
    name = "{short}/resnet50"
    framework = "keras"
    description = "keras.applications.ResNet50, frozen up to cutoff, dense head"
    defaults = {{"weights": "none", "input_size": [64, 64], "cutoff": 100, "head": [256]}}

    def availability(self):
        return Availability.needs_modules("keras", install="pip install keras tensorflow-cpu")

    def check_options(self, options):
        return [] if options["cutoff"] >= 0 else ["cutoff: must be >= 0"]

    def fit(self, job):
        """Build and train; return the trained model (benchbox times this call)."""
        import keras  # imported here, so that listing plugins never needs the framework

        keras.utils.set_random_seed(job.seed)
        h, w = job.options["input_size"]
        base = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(h, w, 3))
        for layer in base.layers[: job.options["cutoff"]]:
            layer.trainable = False
        inputs = keras.Input((h, w, 3))
        x = keras.layers.GlobalAveragePooling2D()(base(inputs))
        for units in job.options["head"]:
            x = keras.layers.Dense(units, activation="relu")(x)
        model = keras.Model(inputs, keras.layers.Dense(job.num_classes, activation="softmax")(x))
        model.compile(keras.optimizers.Adam(job.training.learning_rate), "sparse_categorical_crossentropy")
        model.fit(self._inputs(job.x_train), job.y_train,
                  epochs=job.training.epochs, batch_size=job.training.batch_size, verbose=0)
        return model

    def predict(self, model, images, ids=None):
        """Class probabilities for uint8 images (N, H, W) or (N, H, W, 3); benchbox times this call too."""
        return np.asarray(model.predict(self._inputs(images), verbose=0), dtype=float)

    @staticmethod
    def _inputs(images):
        """Grayscale (N, H, W) repeated to 3 channels, RGB (N, H, W, 3) as it is: float32 (N, H, W, 3)."""
        return to_channels(images, 3).astype("float32")


@hookimpl
def benchbox_backbones():
    return [KerasResNet50()]
'''

TEST = """from benchbox.plugins import load_registry
from benchbox.testing import check_backbone


def test_conformance():
    backbone = load_registry().get("backbone", "{short}/resnet50")
    check_backbone(backbone, options={{"input_size": [32, 32]}})
"""

README = """# {dist}

A benchbox backbone plugin. Install it next to benchbox and it appears in `benchbox plugins`:

    pip install -e .
    benchbox plugins
    python -m pytest tests

Use it in a suite with `plugin = "{short}/resnet50"`.
"""


def scaffold(name: str, parent: Path) -> Path:
    """Write the package benchbox-NAME into parent/benchbox-NAME; return its path."""
    short = name.lower().removeprefix("benchbox-")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", short):
        raise BenchboxError(f"plugin name {name!r}: use lowercase letters, digits and '_' (e.g. resnet)")
    dist, module = f"benchbox-{short}", f"benchbox_{short}"
    root = Path(parent) / dist
    if root.exists():
        raise BenchboxError(f"{root} already exists; choose another name or remove it")
    fields = {"dist": dist, "short": short, "module": module}
    (root / module).mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "pyproject.toml").write_text(PYPROJECT.format(**fields))
    (root / module / "__init__.py").write_text(MODULE.format(**fields))
    (root / "tests" / "test_conformance.py").write_text(TEST.format(**fields))
    (root / "README.md").write_text(README.format(**fields))
    return root
