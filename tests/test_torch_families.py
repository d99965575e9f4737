"""The PyTorch backbone families: timm/<model> and txv/<weights> (plugins/benchbox_torch/families.py)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from benchbox.contracts import FoldJob, TrainingConfig
from benchbox.errors import BenchboxError, SuiteError, WeightsError
from conftest import assert_mentions, needs_torch, run_cli, tiny_suite

HAS_TIMM = importlib.util.find_spec("timm") is not None
HAS_TXV = importlib.util.find_spec("torchxrayvision") is not None
needs_timm = pytest.mark.skipif(not HAS_TIMM, reason="timm not installed (pip install 'benchbox[torch]')")
needs_txv = pytest.mark.skipif(not HAS_TXV, reason="torchxrayvision not installed (pip install 'benchbox[torch,txv]')")
pytestmark = [needs_torch, needs_timm]


@pytest.fixture(scope="module")
def reg():
    import torch  # noqa: F401  (PyTorch before anything that might import TensorFlow)

    from benchbox.plugins import load_registry

    return load_registry()


def options(backbone, **overrides):
    return {**backbone.defaults, "weights": "none", **overrides}


def tiny_job(opts, n=12, num_classes=2, seed=5):
    rng = np.random.default_rng(seed)
    h, w = opts["input_size"]
    y = np.arange(n) % num_classes
    x = rng.integers(0, 120, (n, h, w), dtype=np.uint8) + (60 * y).astype(np.uint8)[:, None, None]
    x_test = rng.integers(0, 180, (4, h, w), dtype=np.uint8)
    return FoldJob(x, y, x_test, num_classes, opts, TrainingConfig(epochs=1, batch_size=4), seed)


# --- names, options, errors: no network is trained -------------------------------------------
def test_unknown_timm_name_lists_the_closest_models(reg):
    with pytest.raises(BenchboxError, match=r"did you mean timm/resnet18\b"):
        reg.get("backbone", "timm/resnet81")
    assert reg.get("backbone", "timm/resnet18.a1_in1k").name == "timm/resnet18.a1_in1k"  # a pretrained tag


def test_timm_defaults_follow_the_model(reg):
    b = reg.get("backbone", "timm/vit_tiny_patch16_224")
    assert b.defaults["input_size"] == [224, 224] and b.defaults["freeze"] == "none"
    assert b.defaults["weights"] == "imagenet" and b.framework == "torch"


def test_a_freeze_module_that_does_not_exist_fails_validate_with_the_closest_names(reg, tmp_path):
    from benchbox.define.suite import load_suite

    suite = tiny_suite(
        tmp_path,
        '[backbones.r18]\nplugin = "timm/resnet18"\nweights = "none"\ninput_size = [48, 48]\nfreeze = "layer5"\n',
    )
    with pytest.raises(SuiteError) as exc:
        load_suite(suite, reg)
    msg = str(exc.value)
    assert "backbones.r18" in msg and "no layer or module named 'layer5'" in msg and "layer4" in msg


def test_freeze_values_a_user_may_write(reg):
    b = reg.get("backbone", "timm/resnet18")
    for good in ("none", "all", "0.5", 0.25, "layer3", "layer3.1.conv2"):
        assert b.check_options(options(b, freeze=good, input_size=[48, 48])) == [], good
    assert b.check_options(options(b, freeze=1.5, input_size=[48, 48]))
    assert "imagenet" in " ".join(b.check_options(options(b, weights="/no/such/file.pth")))


def test_an_input_size_the_network_cannot_take_is_named(reg):
    b = reg.get("backbone", "timm/coat_tiny")  # built for one input size, with no img_size to change it
    (problem,) = b.check_options(options(b, input_size=[40, 56]))
    assert "cannot take input_size [40, 56]" in problem and "made for 224x224" in problem


def test_timm_imagenet_offline_is_a_clear_error_with_url_cache_and_alternatives(reg, tmp_path, monkeypatch, no_network):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # else the hub retries for ~25 s before giving up
    b = reg.get("backbone", "timm/resnet18")
    with pytest.raises(WeightsError) as exc:
        b.prepare({**b.defaults, "input_size": [48, 48]})
    assert_mentions(
        str(exc.value),
        "timm/resnet18",
        "https://huggingface.co/timm/resnet18",
        str(tmp_path / "hf"),
        'weights = "none"',
        ".safetensors",
    )


@needs_txv
def test_txv_lists_its_networks_with_their_resolution(reg):
    names = reg.backbones.listing(framework="txv")
    assert "txv/densenet121-res224-all" in names and "txv/resnet50-res512-all" in names
    b = reg.get("backbone", "txv/densenet121-res224-all")
    assert b.defaults["input_size"] == [224, 224] and b.defaults["weights"] == "pretrained"
    assert reg.get("backbone", "txv/resnet50-res512-all").defaults["input_size"] == [512, 512]
    assert any("not ImageNet" in p for p in b.check_options(options(b, weights="imagenet")))


@needs_txv
def test_txv_weights_offline_name_the_github_file_and_the_cache_path(reg, tmp_path, monkeypatch):
    import torchxrayvision as xrv

    def refuse(url, filename):
        raise ConnectionError(f"cannot reach {url} (simulated by the test)")

    monkeypatch.setattr(xrv.utils, "get_cache_dir", lambda: str(tmp_path / "xrv") + "/")
    monkeypatch.setattr(xrv.utils, "download", refuse)
    b = reg.get("backbone", "txv/densenet121-res224-all")
    with pytest.raises(WeightsError) as exc:
        b.prepare(b.defaults)
    assert_mentions(
        str(exc.value),
        "txv/densenet121-res224-all",
        "https://github.com/mlmed/torchxrayvision/releases/",
        str(tmp_path / "xrv"),
        'weights = "none"',
    )


def test_a_local_timm_state_dict_loads_without_the_classifier(reg, tmp_path):
    import timm
    import torch
    from safetensors.torch import save_file

    from benchbox_torch import engine

    b = reg.get("backbone", "timm/resnet18")
    torch.manual_seed(1)
    plain = timm.create_model("resnet18")  # the original network, classifier included
    save_file(plain.state_dict(), str(tmp_path / "r18.safetensors"))
    opts = options(b, weights=str(tmp_path / "r18.safetensors"), input_size=[48, 48])
    b.prepare(opts)
    net, _ = engine.build_model(b.spec(opts), opts, 2, 0)
    assert torch.equal(net.base.model.layer3[0].conv1.weight, plain.layer3[0].conv1.weight)


# --- real (tiny) networks ------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    "name, freeze",
    [
        ("timm/resnet18", "layer2"),
        ("timm/efficientnet_b0", 0.5),
        ("timm/convnext_atto", "none"),
        pytest.param("txv/densenet121-res224-all", "denseblock3", marks=needs_txv),
    ],
)
def test_conformance_kit(reg, name, freeze):
    from benchbox.testing import check_backbone

    b = reg.get("backbone", name)
    check_backbone(b, options={"input_size": [32, 32], "freeze": freeze}, class_counts=(2,))


@pytest.mark.slow
def test_frozen_modules_and_their_batchnorm_statistics_do_not_change(reg):
    import torch

    from benchbox_torch import engine

    b = reg.get("backbone", "timm/resnet18")
    opts = options(b, freeze="layer2", input_size=[32, 32], cache_prefix=False)  # the whole net runs in training
    spec = b.spec(opts)
    before, _ = engine.build_model(spec, opts, 2, 5)
    before = {k: v.clone() for k, v in before.state_dict().items()}
    model = b.fit(tiny_job(opts))
    after = model.net.state_dict()
    frozen = [
        k
        for k in after
        if k.startswith(("base.model.conv1", "base.model.bn1", "base.model.layer1", "base.model.layer2"))
    ]
    live = [k for k in after if k.startswith("base.model.layer4")]
    assert any("running_mean" in k for k in frozen) and any("running_mean" in k for k in live)
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert not all(torch.equal(before[k], after[k]) for k in live if "running_mean" in k or k.endswith("weight"))
    assert model.info["frozen_units"] == 20 and model.info["last_frozen_layer"] == "layer2.1.bn2"
    assert model.info["prefix_cache"] == "off: cache_prefix = false in the suite"


@pytest.mark.slow
@needs_txv
def test_txv_input_is_one_channel_scaled_to_plus_minus_1024(reg):
    import torch

    from benchbox_torch import engine

    b = reg.get("backbone", "txv/densenet121-res224-all")
    opts = options(b, input_size=[32, 32])
    net, _ = engine.build_model(b.spec(opts), opts, 2, 0)
    x = torch.tensor([[0, 255], [51, 204]], dtype=torch.uint8).view(1, 1, 2, 2)
    scaled = net.normalize(x)
    assert scaled.shape == (1, 1, 2, 2) and net.base.features.conv0.in_channels == 1
    assert torch.allclose(scaled.flatten(), torch.tensor([-1024.0, 1024.0, -614.4, 614.4]), atol=1e-3)


@pytest.mark.slow
def test_run_a_tiny_suite_with_a_timm_backbone_frozen_to_layer2(tmp_path):
    suite = tiny_suite(
        tmp_path,
        '[backbones.r18]\nplugin = "timm/resnet18"\nweights = "none"\ninput_size = [48, 48]\nfreeze = "layer2"\n',
        name="timmrun",
    )
    suite.write_text(suite.read_text().replace("k = 3", "k = 2"))
    res = run_cli("run", suite)
    assert res.returncode == 0, res.stderr + res.stdout
    assert "r18" in res.stdout and "Sensitivity" in res.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()
    records = [json.loads(p.read_text()) for p in sorted((run_dir / "folds").glob("*.json"))]
    assert len(records) == 2
    info = records[0]["info"]
    assert info["last_frozen_layer"] == "layer2.1.bn2" and info["frozen_units"] == 20
    assert info["params_frozen"] > 0 and info["prefix_cache"] == "computed"


@pytest.mark.slow
def test_describe_shows_what_froze():
    res = run_cli("backbones", "describe", "timm/resnet18", "--freeze", "layer2", "--input", "64x64")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "layer2.1.bn2" in out and "20 of 40" in out and "layer3" in out and "params_frozen" in out


def test_a_bare_fraction_in_a_suite_is_a_freeze_setting(reg, tmp_path):
    from benchbox.define.suite import load_suite

    body = '[backbones.r18]\nplugin = "timm/resnet18"\nweights = "none"\ninput_size = [48, 48]\nfreeze = {}\n'
    assert load_suite(tiny_suite(tmp_path, body.format("0.5")), reg).backbones["r18"].options["freeze"] == 0.5
    with pytest.raises(SuiteError, match="freeze: must be a string or a number"):
        load_suite(tiny_suite(tmp_path, body.format("[1]")), reg)
