"""BatchNorm momentum means the same in both engines (docs/backbones.md): PyTorch's 0.1, i.e.
Keras's 0.9, on every BatchNorm layer of the backbone."""

import pytest

from conftest import needs_keras, needs_torch


@pytest.mark.slow
@needs_keras
@needs_torch
def test_batchnorm_momentum_means_the_same_in_both_engines(registry):
    from benchbox_engine_common.networks import BN_MOMENTUM
    from benchbox_keras.engine import build_model as keras_model
    from benchbox_keras.engine import import_keras
    from benchbox_torch.engine import _BN
    from benchbox_torch.engine import build_model as torch_model

    keras = import_keras()
    options = {**registry.backbones["keras/mobilenet_v2"].obj.defaults, "weights": "none", "input_size": [32, 32]}
    _, base = keras_model("mobilenet_v2", {**options, "alpha": 0.35}, 3, 0)
    keras_bn = [layer.momentum for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    options = {**registry.backbones["torch/mobilenet_v2"].obj.defaults, "weights": "none", "input_size": [32, 32]}
    net, _ = torch_model("mobilenet_v2", options, 3, 0)
    torch_bn = [m.momentum for m in net.modules() if isinstance(m, _BN)]
    assert len(keras_bn) == len(torch_bn) > 10  # the same layers (docs/backbones.md: 104 weight-carrying)
    assert keras_bn == pytest.approx([1 - BN_MOMENTUM] * len(keras_bn)) and set(torch_bn) == {BN_MOMENTUM}
