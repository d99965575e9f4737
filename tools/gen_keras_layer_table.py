"""Regenerate plugins/benchbox_engine_common/keras_layers.json: the Keras layer list of each study network.

The PyTorch plugins map a Keras layer cutoff onto their own modules by counting weight-carrying
layers (convolutions, batch norms, dense) in this list. Run once per Keras release:
    python tools/gen_keras_layer_table.py
"""

import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402

APPS = {
    "vgg19": "VGG19",
    "mobilenet_v2": "MobileNetV2",
    "inception_v3": "InceptionV3",
    "xception": "Xception",
    "inception_resnet_v2": "InceptionResNetV2",
}

table = {"keras_version": keras.__version__, "networks": {}}
for network, cls in APPS.items():
    model = getattr(keras.applications, cls)(include_top=False, weights=None, input_shape=(299, 299, 3))
    table["networks"][network] = [
        [layer.name, type(layer).__name__, int(bool(layer.weights))] for layer in model.layers
    ]
out = Path(__file__).resolve().parents[1] / "plugins" / "benchbox_engine_common" / "keras_layers.json"
out.write_text(json.dumps(table, separators=(",", ":")))
print(f"wrote {out}")
