"""Foundation encoders by name: hf/<repo-or-dir> (transformers) and open_clip/<name>
(plugins/benchbox_torch/foundation.py, foundation_nets.py). Tiny random models built from configs and
saved as local snapshots: nothing is downloaded."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from benchbox.contracts import FoldJob, TrainingConfig
from benchbox.errors import SuiteError, WeightsError
from conftest import assert_mentions, needs_torch, tiny_suite

HAS_HF = importlib.util.find_spec("transformers") is not None
HAS_OC = importlib.util.find_spec("open_clip") is not None
needs_hf = pytest.mark.skipif(not HAS_HF, reason="transformers not installed (pip install 'benchbox[foundation]')")
needs_oc = pytest.mark.skipif(not HAS_OC, reason="open_clip not installed (pip install 'benchbox[foundation]')")
pytestmark = [needs_torch]


@pytest.fixture(scope="module")
def reg():
    import torch  # noqa: F401  (PyTorch before anything that might import TensorFlow)

    from benchbox.plugins import load_registry

    return load_registry()


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    """A tiny random ViT with its image processor, saved as a local snapshot."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    path = tmp_path_factory.mktemp("snap") / "tiny-vit"
    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8
    )
    ViTModel(config).save_pretrained(path)
    ViTImageProcessor(
        size={"height": 32, "width": 32}, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.25, 0.3]
    ).save_pretrained(path)
    return path


def images(n=6, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (n, size, size), dtype=np.uint8)


def tiny_job(opts, n=12, seed=5):
    rng = np.random.default_rng(seed)
    h, w = opts["input_size"]
    y = np.arange(n) % 2
    x = rng.integers(0, 120, (n, h, w), dtype=np.uint8) + (60 * y).astype(np.uint8)[:, None, None]
    return FoldJob(x, y, x[:4], 2, opts, TrainingConfig(epochs=2, batch_size=4), seed)


# --- hf/ --------------------------------------------------------------------------------------------
@needs_hf
def test_hf_snapshot_defaults_features_and_what_was_applied(reg, vit_dir):
    b = reg.get("backbone", f"hf/{vit_dir}")
    opts = dict(b.defaults)
    assert opts["weights"] == "pretrained" and opts["input_size"] == [32, 32]  # the processor's size
    assert b.check_options(opts) == []
    x = images()
    f1, f2 = b.embed(x, opts), b.embed(x[::-1].copy(), opts)
    assert f1.shape == (6, 32) and f1.dtype == np.float32
    assert np.allclose(f1, f2[::-1], atol=1e-5)  # deterministic, independent of the batch order
    identity = b.embed_identity(opts)
    assert identity["feature"] == "pooler_output" and identity["weights"] == str(vit_dir)
    assert "mean (0.4, 0.5, 0.6), std (0.2, 0.25, 0.3)" in identity["preprocessing_applied"]
    assert "grayscale x3" in identity["preprocessing_applied"] and "transformers" in identity["versions"]
    facts = b.describe(opts, [32, 32])
    assert "pooler_output" in facts["feature"] and "ViTImageProcessor" in facts["processor"]


@needs_hf
def test_hf_features_are_the_models_pooled_output_with_the_processors_normalisation(reg, vit_dir):
    import torch
    from transformers import ViTModel

    from benchbox_torch.foundation_nets import _hf_kwargs

    b = reg.get("backbone", f"hf/{vit_dir}")
    x = images(3)
    ours = b.embed(x, dict(b.defaults))
    model = ViTModel.from_pretrained(vit_dir, **_hf_kwargs()).eval()  # no hub kernels
    t = torch.from_numpy(x).float()[:, None].expand(-1, 3, -1, -1) / 255
    mean, std = torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = model(pixel_values=(t - mean) / std).pooler_output.numpy()
    assert np.allclose(ours, ref, atol=1e-4)


@needs_hf
def test_hf_embedding_leaves_the_encoder_untouched_and_freeze_all_trains_the_head_only(reg, vit_dir):
    import torch

    from benchbox_torch import embed, engine

    b = reg.get("backbone", f"hf/{vit_dir}")
    opts = {**b.defaults, "freeze": "all"}
    b.embed(images(), opts)
    for net, _ in embed._ENCODERS.values():
        assert not any(p.requires_grad for p in net.parameters())
    before, _ = engine.build_model(b.spec(opts), opts, 2, 5)
    before = {k: v.clone() for k, v in before.state_dict().items()}
    model = b.fit(tiny_job(opts))
    after = model.net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in after if k.startswith("base."))
    assert not all(torch.equal(before[k], after[k]) for k in after if k.startswith("head."))
    assert model.info["feature"] == "pooler_output" and model.info["frozen_units"] == model.info["units"]
    assert model.info["params_trainable"] == 2 * 32 + 2  # the head's Linear(32, 2)
    assert model.info["prefix_cache"] == "computed"  # the frozen encoder runs once per image, not per epoch


@needs_hf
@pytest.mark.slow  # a fine-tune of the whole unfrozen part
def test_hf_freeze_by_module_name_and_fine_tuning(reg, vit_dir):
    b = reg.get("backbone", f"hf/{vit_dir}")
    names = b.describe({**b.defaults}, [32, 32])["freeze_names"]
    layer = next(n for n in names.split(", ") if n.endswith(".0"))  # the first transformer block
    opts = {**b.defaults, "freeze": layer}
    assert b.check_options(opts) == []
    model = b.fit(tiny_job(opts))
    assert 0 < model.info["frozen_units"] < model.info["units"]
    assert "no layer or module named 'nope'" in " ".join(b.check_options({**opts, "freeze": "nope"}))


@needs_hf
def test_hf_hub_name_offline_is_a_one_line_error_naming_the_model_and_the_local_snapshot(
    reg, tmp_path, monkeypatch, no_network
):
    import time

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # HF_HUB_OFFLINE unset, as on a user's machine
    b = reg.get("backbone", "hf/acme/xray-vit")
    opts = dict(b.defaults)
    assert b.check_options(opts) == []  # validate cannot know the structure offline; prepare fails before any data
    t0 = time.perf_counter()
    with pytest.raises(WeightsError) as exc:
        b.prepare(opts)
    assert time.perf_counter() - t0 < 10  # the cache only, at once: not the hub client's retries
    msg = str(exc.value)
    assert "\n" not in msg
    assert_mentions(
        msg, "hf/acme/xray-vit", "'acme/xray-vit'", "huggingface-cli download acme/xray-vit", 'weights = "DIR"'
    )


@needs_hf
def test_hf_weights_may_point_a_hub_name_at_a_local_snapshot(reg, vit_dir, no_network):
    b = reg.get("backbone", "hf/acme/xray-vit")
    opts = {**b.defaults, "weights": str(vit_dir), "input_size": [32, 32]}
    assert b.check_options(opts) == []
    b.prepare(opts)
    ours = b.embed(images(2), opts)
    assert np.allclose(ours, reg.get("backbone", f"hf/{vit_dir}").embed(images(2), {**opts, "weights": "pretrained"}))
    bad = b.check_options({**opts, "weights": str(vit_dir / "missing")})
    assert any("local snapshot directory" in p for p in bad)


@needs_hf
def test_a_text_only_model_fails_validate(reg, tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    ).save_pretrained(tmp_path / "bert")
    suite = tiny_suite(tmp_path, f'[backbones.bert]\nplugin = "hf/{tmp_path / "bert"}"\ninput_size = [32, 32]\n')
    from benchbox.define.suite import load_suite

    with pytest.raises(SuiteError) as err:
        load_suite(suite, reg)
    assert "BertModel has no image tower" in str(err.value) and "backbones.bert" in str(err.value)


@needs_hf
@pytest.mark.slow
def test_a_suite_runs_an_hf_snapshot_by_knn_and_linear_probe(reg, vit_dir, tmp_path, monkeypatch):
    from benchbox.define.suite import load_suite
    from benchbox.execute.runner import run_suite
    from benchbox.execute.store import RunStore

    monkeypatch.setenv("BENCHBOX_CACHE", str(tmp_path / "cache"))
    body = ""
    for alias, scheme in (("kn", "knn"), ("lp", "linear-probe")):
        body += f'[backbones.{alias}]\nplugin = "hf/{vit_dir}"\nscheme = "{scheme}"\n' + (
            "k = 3\n" if scheme == "knn" else ""
        )
    result = run_suite(load_suite(tiny_suite(tmp_path, body), reg), reg)
    assert dict(zip(result.summary["backbone"], result.summary["scheme"])) == {"kn": "knn", "lp": "linear-probe"}
    records = RunStore(result.run_dir).read_records()[0]
    assert len(records) == 6
    key = records[0].info["encoder_key"]
    assert all(r.info["encoder_key"] == key for r in records)  # one encoder for both schemes and every fold
    what = json.loads((tmp_path / "cache" / "embeddings" / key / "encoder.json").read_text())
    assert what["feature"] == "pooler_output" and "mean (0.4, 0.5, 0.6)" in what["preprocessing_applied"]
    assert what["weights"].startswith("dir-sha256:")  # the snapshot by content


# --- open_clip/ -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny open_clip architecture registered from a config file (open_clip.add_model_config)."""
    import open_clip

    path = tmp_path_factory.mktemp("occfg") / "bb-tiny-vit.json"
    path.write_text(
        json.dumps(
            {
                "embed_dim": 16,
                "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
                "text_cfg": {"context_length": 8, "vocab_size": 100, "width": 16, "heads": 2, "layers": 1},
            }
        )
    )
    open_clip.add_model_config(path)
    return "bb-tiny-vit"


@needs_oc
def test_open_clip_visual_tower_features_freeze_and_mean_std(reg, tiny_clip):
    import torch

    from benchbox_torch import engine

    b = reg.get("backbone", f"open_clip/{tiny_clip}")
    opts = {**b.defaults, "freeze": "all"}
    assert opts["weights"] == "none" and opts["input_size"] == [32, 32]  # no pretrained tag for this config
    assert b.check_options(opts) == []
    f1, f2 = b.embed(images(), opts), b.embed(images(), opts)
    assert f1.shape == (6, 16) and np.array_equal(f1, f2)
    net, _ = engine.build_model(b.spec(opts), opts, 2, 5)  # random weights: the fold's seed
    assert torch.allclose(net.mean.flatten(), torch.tensor([0.48145466, 0.4578275, 0.40821073]))
    identity = b.embed_identity(opts)
    assert identity["feature"] == "output" and "open_clip" in identity["versions"]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    model = b.fit(tiny_job(opts))
    assert all(torch.equal(before[k], v) for k, v in model.net.state_dict().items() if k.startswith("base."))
    assert "the projected image embedding" in b.describe(opts, [32, 32])["feature"]


@needs_oc
def test_open_clip_pretrained_tag_offline_names_the_model_and_a_local_checkpoint(
    reg, tmp_path, monkeypatch, no_network
):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    b = reg.get("backbone", "open_clip/RN50")
    opts = {**b.defaults, "weights": "openai", "input_size": [64, 64]}
    assert b.check_options(opts) == []
    with pytest.raises(WeightsError) as exc:
        b.prepare(opts)
    msg = str(exc.value)
    assert "\n" not in msg and "open_clip/RN50" in msg and "'openai'" in msg and 'weights = "none"' in msg
    assert "not an open_clip pretrained tag" in " ".join(b.check_options({**opts, "weights": "laion-typo"}))


@pytest.mark.slow
def test_the_schemes_suite_on_the_real_xrays_then_a_rerun_hits_the_cache(reg, vit_dir, tmp_path, monkeypatch):
    """issue 26's whole comparison: suites/example-schemes.toml (a study CNN fine-tuned and as a linear
    probe, a timm ViT by kNN, an hf/ encoder) on the real Dataset_2, at a tiny size, with the tiny local
    snapshot for the hf/ entry and random weights (no hub here); a second run embeds nothing, and the
    leaderboard keeps the schemes apart."""
    from benchbox.define.suite import load_suite
    from benchbox.execute.runner import run_suite
    from benchbox.results.views.leaderboard import choose_metric, collect, rank
    from conftest import DATA, ROOT

    if not (DATA / "chest_xray").is_dir():
        pytest.skip(f"the real X-rays are not in {DATA}")
    monkeypatch.setenv("BENCHBOX_CACHE", str(tmp_path / "cache"))
    text = (ROOT / "suites" / "example-schemes.toml").read_text()
    text = text.replace('plugin = "hf/microsoft/rad-dino"', f'plugin = "hf/{vit_dir}"')
    text = text.replace('weights = "imagenet"', 'weights = "none"').replace(
        "input_size = [224, 224]", "input_size = [32, 32]"
    )
    text = (
        text.replace("covid = 40", "covid = 8")
        .replace("bacterial = 20", "bacterial = 4")
        .replace("viral = 20", "viral = 4")
    )
    text = text.replace("normal = 40", "normal = 8").replace("k = 5", "k = 3").replace("epochs = 3", "epochs = 1")
    text = text.replace('plugin = "timm/vit_tiny_patch16_224"', 'plugin = "timm/vit_tiny_patch16_224"\nk = 3')
    suite = tmp_path / "schemes.toml"
    suite.write_text(f'output_dir = "{tmp_path / "runs"}"\ndata_dir = "{DATA}"\n' + text)  # top-level keys first
    first = run_suite(load_suite(suite, reg), reg)
    schemes = dict(zip(first.summary["backbone"], first.summary["scheme"]))
    assert schemes == {
        "mnv2-finetune": "fine-tune",
        "mnv2-probe": "linear-probe",
        "vit-knn": "knn",
        "rad-dino-probe": "linear-probe",
    }
    again = run_suite(load_suite(suite, reg), reg, new=True)
    frozen = [r for r in again.records if r.info.get("scheme") in ("linear-probe", "knn")]
    assert len(frozen) == 9 and all(r.info["embedding_cache"]["computed"] == 0 for r in frozen)
    entries, _, metrics = collect([first.run_dir], reg)
    ranked = rank(entries, choose_metric(metrics, None))
    groups = dict(zip(ranked["backbone"], ranked["group"]))
    assert groups["mnv2-finetune"] != groups["mnv2-probe"]  # a probe never ranks against a fine-tune
    assert groups["mnv2-probe"] == groups["rad-dino-probe"] != groups["vit-knn"]
