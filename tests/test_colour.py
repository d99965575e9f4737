"""Colour input (issue 13): data sets declare their channels (``color = "gray" | "rgb"`` on the
folder and csv data sets), the core keeps both shapes, and the engines feed RGB networks colour."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from PIL import Image

from benchbox.contracts import FoldJob, SampleSet, TrainingConfig
from benchbox.data.images import DecodeCache, decode_dicom, gray_to_rgb, rgb_to_gray, to_channels
from benchbox.errors import BenchboxError, DataError
from conftest import WEIGHTS, needs_keras, needs_torch, run_cli, write_suite

HAS_PYDICOM = importlib.util.find_spec("pydicom") is not None  # imported by the tests that use it
needs_pydicom = pytest.mark.skipif(not HAS_PYDICOM, reason="pydicom not installed (pip install 'benchbox[dicom]')")

# the same luma (ITU-R 601, Pillow's "L"): a grayscale loader sees one gray for both, only colour tells them apart
RED, GREEN = (200, 0, 0), (0, 102, 0)
SHARED_H5 = WEIGHTS / "mobilenet_v2_0.35_224_no_top_imagenet.h5"


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """A decode cache of this test's own (no decoded file from another test or run is reused)."""
    monkeypatch.setenv("BENCHBOX_CACHE", str(tmp_path / "cache"))  # the shared decode cache follows it


def square(colour, size=(24, 32), background=(0, 0, 0), seed=0):
    """An RGB image (h, w, 3): a coloured square on a background, at a seeded position."""
    rng = np.random.default_rng(seed)
    h, w = size
    out = np.zeros((h, w, 3), dtype=np.uint8)
    out[...] = background
    top, left = rng.integers(0, h // 2), rng.integers(0, w // 2)
    out[top : top + h // 2, left : left + w // 2] = colour
    return out


def colour_folder(root, n=4, size=(24, 32)):
    """root/{red,green}/*.png in colour, and one grayscale PNG in red/ (a gray file in a colour set)."""
    for name, colour in (("red", RED), ("green", GREEN)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(square(colour, size, seed=i)).save(root / name / f"p{i}_{name}.png")
    gray = np.full(size, 90, dtype=np.uint8)
    Image.fromarray(gray, "L").save(root / "red" / "gray.png")
    return root


def dataset(name):
    from benchbox.plugins import load_registry

    return load_registry().get("dataset", name)


def samples(name, **options):
    p = dataset(name)
    return p.samples({**p.defaults, **options}, 0, None)


# --- data: folder, csv, DICOM ---------------------------------------------------------------------


def test_folder_loads_colour_with_rgb_and_grayscale_by_default(tmp_path):
    root = colour_folder(tmp_path / "shapes")
    rgb = samples("folder", root=str(root), color="rgb")
    gray = samples("folder", root=str(root))
    assert rgb.channels == 3 and gray.channels == 1
    x, g = rgb.load(rgb.table, (32, 32)), gray.load(gray.table, (32, 32))
    assert x.shape == (9, 32, 32, 3) and x.dtype == np.uint8
    assert g.shape == (9, 32, 32) and g.dtype == np.uint8
    ids = rgb.table["id"].tolist()
    assert ids == gray.table["id"].tolist()
    red = x[ids.index("red/p0_red.png")]
    assert {tuple(v) for v in red.reshape(-1, 3)} >= {RED, (0, 0, 0)}  # the colour itself, not its gray
    green = x[ids.index("green/p0_green.png")]
    assert (green[..., 0] == 0).all() and green[..., 1].max() == 102
    # a grayscale file in a colour set is repeated to 3 channels
    repeated = x[ids.index("red/gray.png")]
    assert (repeated[..., 0] == repeated[..., 1]).all() and (repeated[..., 1] == repeated[..., 2]).all()
    assert repeated.max() == 90
    # gray: the same luma for red and green, as the hue example needs; matching RGB -> luma here
    assert g[ids.index("red/p0_red.png")].max() == g[ids.index("green/p0_green.png")].max() == 60
    assert np.abs(rgb_to_gray(x).astype(int) - g).max() <= 1  # resize then luma vs luma then resize
    assert rgb.fingerprint == gray.fingerprint + ":rgb"  # the same files, loaded differently
    assert any("colour: RGB" in n for n in rgb.notes)


def test_csv_loads_colour(tmp_path):
    root = colour_folder(tmp_path / "shapes", n=2)
    lines = ["path,label,patient"] + [
        f"{p.relative_to(root).as_posix()},{p.parent.name},{p.stem}" for p in sorted(root.rglob("*.png"))
    ]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    s = samples("csv", file=str(root / "labels.csv"), color="rgb")
    x = s.load(s.table, (16, 20))
    assert s.channels == 3 and x.shape == (5, 16, 20, 3)
    assert samples("csv", file=str(root / "labels.csv")).load(s.table, (16, 20)).shape == (5, 16, 20)


def test_decode_cache_keeps_gray_and_colour_apart_on_disk(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(square(RED)).save(path)
    cache = DecodeCache(tmp_path / "decoded")
    gray = cache.get(path, (24, 32))
    colour = cache.get(path, (24, 32), channels=3)
    assert gray.shape == (24, 32) and colour.shape == (24, 32, 3)
    files = sorted(p.name for p in (tmp_path / "decoded" / "24x32").iterdir())
    assert len(files) == 2 and files[0].endswith("-rgb.npy") != files[1].endswith("-rgb.npy")
    fresh = DecodeCache(tmp_path / "decoded")  # from disk, each in its own shape
    assert fresh.get(path, (24, 32), channels=3).shape == (24, 32, 3) and fresh.get(path, (24, 32)).shape == (24, 32)
    assert fresh.hits == 2 and fresh.misses == 0
    assert cache.load_many([], (8, 8), channels=3).shape == (0, 8, 8, 3)


@pytest.mark.parametrize("value", ["colour", "RGB", "grey", 3])
def test_bad_color_is_a_validate_error_naming_the_data_set(tmp_path, value, registry):
    from benchbox.define.suite import SuiteError, load_suite

    root = colour_folder(tmp_path / "shapes", n=1)
    shown = f'"{value}"' if isinstance(value, str) else value
    suite = write_suite(
        tmp_path / "s.toml",
        f"""
        name = "c"
        [datasets.shapes]
        plugin = "folder"
        root = "{root}"
        color = {shown}
        [backbones.b]
        plugin = "centroid/pixels"
        """,
    )
    with pytest.raises(SuiteError) as err:
        load_suite(suite, registry)
    text = str(err.value)
    assert "datasets.shapes" in text and "color" in text
    if isinstance(value, str):  # a string: the values to use; a number: the type check says string
        assert '"gray"' in text and '"rgb"' in text
    if value == "grey":
        assert 'spelled "gray"' in text
    with pytest.raises(DataError, match="folder: color"):
        samples("folder", root=str(root), color=value)


@needs_pydicom
def test_dicom_colour_and_monochrome_with_rgb(tmp_path):
    from test_user_data import write_dicom

    try:
        from pydicom.pixels import convert_color_space
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import convert_color_space

    rgb = square(RED, (20, 24), background=(10, 40, 90))
    path = write_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB")
    assert np.array_equal(decode_dicom(path, channels=3), rgb)
    assert np.array_equal(decode_dicom(path), rgb_to_gray(rgb))  # gray as before
    ybr = write_dicom(
        tmp_path / "ybr.dcm", convert_color_space(rgb, "RGB", "YBR_FULL"), photometric="YBR_FULL"
    )  # converted back to RGB (lossy by rounding only)
    assert np.abs(decode_dicom(ybr, channels=3).astype(int) - rgb).max() <= 2
    gray = np.arange(20 * 24, dtype=np.uint8).reshape(20, 24)
    mono1 = write_dicom(tmp_path / "m1.dcm", 255 - gray, photometric="MONOCHROME1")
    assert np.array_equal(decode_dicom(mono1, channels=3), gray_to_rgb(gray))  # inverted, then repeated
    # through a folder data set with color = "rgb": an RGB DICOM and a MONOCHROME2 one side by side
    write_dicom(tmp_path / "set" / "a" / "rgb.dcm", rgb, photometric="RGB")
    write_dicom(tmp_path / "set" / "b" / "mono.dcm", gray)
    s = samples("folder", root=str(tmp_path / "set"), color="rgb")
    x = s.load(s.table, (20, 24))
    assert x.shape == (2, 20, 24, 3)
    assert np.array_equal(x[0], rgb) and np.array_equal(x[1], gray_to_rgb(gray))


# --- the core: contract, probes, plan, explain thumbnails ---------------------------------------


def test_contract_declares_channels():
    import pandas as pd

    table = pd.DataFrame({"id": ["a"], "label": ["x"], "group": ["a"], "source": ["s"]})
    with pytest.raises(ValueError, match="channels"):
        SampleSet(table, ("x", "y"), "x", lambda t, s: None, channels=2)
    gray = np.zeros((2, 8, 8), np.uint8)
    job = FoldJob(gray, np.zeros(2, int), gray, 2, {}, TrainingConfig(), 0)
    assert job.channels == 1
    assert FoldJob(gray_to_rgb(gray), np.zeros(2, int), gray_to_rgb(gray), 2, {}, TrainingConfig(), 0).channels == 3


def test_to_channels_repeats_gray_and_takes_the_luma_of_colour():
    rgb = np.stack([square(RED, (8, 8)), square(GREEN, (8, 8))])
    gray = to_channels(rgb, 1)
    assert gray.shape == (2, 8, 8) and gray.max() == 60  # both hues have the same luma
    assert np.array_equal(gray, np.asarray(Image.fromarray(rgb[0]).convert("L")).reshape(1, 8, 8)[0:1].repeat(2, 0))
    back = to_channels(gray, 3)
    assert back.shape == (2, 8, 8, 3) and (back[..., 0] == gray).all()
    assert to_channels(rgb, 3) is rgb


@pytest.mark.parametrize("probe", ["lungs-blackout", "border-only", "centre-only"])
def test_image_probes_paint_every_channel_of_colour_images(probe):
    from benchbox.data.probes import transform

    rng = np.random.default_rng(0)
    rgb = rng.integers(1, 255, (3, 20, 30, 3), dtype=np.uint8)
    out = transform(probe, rgb, {})
    assert out.shape == rgb.shape
    gray_out = transform(probe, rgb[..., 0], {})  # the same geometry as on grayscale, in every channel
    for c in range(3):
        assert np.array_equal(out[..., c] == 0, gray_out == 0)
        assert np.array_equal(out[..., c][out[..., c] > 0], rgb[..., c][out[..., c] > 0])
    assert 0 < (out == 0).mean() < 1


def test_load_checks_the_declared_channels(tmp_path):
    import pandas as pd

    from benchbox.define.plan import _load

    table = pd.DataFrame({"id": ["a", "b"], "label": ["x", "y"], "group": ["a", "b"], "source": ["s", "s"]})
    gray = SampleSet(table, ("x", "y"), "x", lambda t, size: np.zeros((len(t), *size), np.uint8))
    colour = SampleSet(table, ("x", "y"), "x", lambda t, size: np.zeros((len(t), *size, 3), np.uint8), channels=3)
    assert _load(gray, (8, 8), "g").shape == (2, 8, 8)
    assert _load(colour, (8, 8), "c").shape == (2, 8, 8, 3)
    liar = SampleSet(table, ("x", "y"), "x", gray.load, channels=3)
    with pytest.raises(BenchboxError, match=r"expected uint8 \(2, 8, 8, 3\) \(RGB.*channels = 3"):
        _load(liar, (8, 8), "liar")


def test_explain_thumbnails_keep_colour():
    from benchbox_explain.maps import thumbnails

    rgb = np.stack([square(RED, (200, 320))] * 2)
    small = thumbnails(rgb)
    assert small.shape == (2, 100, 160, 3) and small[..., 0].max() == 200 and small[..., 1].max() == 0


# --- engines ------------------------------------------------------------------------------------


def hue_job(channels: int, size=(32, 32), n=16, seed=0):
    """A fold whose class is the hue (red or green squares of the same luma) in ``channels``."""
    x = np.stack([square(RED if i % 2 == 0 else GREEN, size, seed=seed + i) for i in range(n)])
    y = (np.arange(n) % 2).astype(np.int64)
    x = to_channels(x, channels)
    return x, y


def colour_sees_hue(backbone, options):
    """Predictions of a model trained on colour differ between an RGB image and its gray version
    (luma repeated to 3 channels): the network sees the colour. Gray versions of a red and a green
    square are the same image, so a grayscale model could not tell them apart."""
    x, y = hue_job(3)
    opts = {**backbone.defaults, "weights": "none", **options}
    job = FoldJob(x, y, x[:4], 2, opts, TrainingConfig(epochs=1, batch_size=8), seed=5)
    model = backbone.fit(job)
    as_rgb = backbone.predict(model, x[:4], None)
    as_gray = backbone.predict(model, gray_to_rgb(rgb_to_gray(x[:4])), None)
    assert as_rgb.shape == as_gray.shape == (4, 2)
    assert np.abs(as_rgb - as_gray).max() > 1e-4
    # a grayscale batch given to the colour model (an external grayscale set) is repeated to RGB
    assert np.allclose(backbone.predict(model, rgb_to_gray(x[:4]), None), as_gray, atol=1e-5)
    return model


@needs_keras
@pytest.mark.slow
def test_keras_colour_fold_passes_the_kit_and_explains_colour(registry):
    from benchbox.testing import check_backbone

    b = registry.get("backbone", "keras/mobilenet_v2")
    options = {"input_size": [32, 32], "alpha": 0.35}
    opts = check_backbone(b, options=options, channels=3, class_counts=(3,))
    # whether Keras's network sees colour: test_hue_is_learned_in_rgb_and_not_in_gray_end_to_end (with random
    # weights Keras's MobileNet v2 passes next to nothing at 32 px: features ~1e-12 for any image)
    x, y = hue_job(3, n=8)  # 3 classes and the kit's settings: the engine reuses the kit's built model
    model = b.fit(FoldJob(x, y, x[:2], 3, opts, TrainingConfig(epochs=1, batch_size=4), seed=5))
    maps = b.explain(model, x[:2], np.array([0, 1]))  # Grad-CAM on colour input
    assert maps.shape[0] == 2 and maps.ndim == 3 and np.isfinite(maps).all()


@needs_keras
@pytest.mark.slow
@pytest.mark.parametrize("network", ["vgg19", "vgg16", "efficientnet_b0"])
def test_keras_colour_preprocessing_is_the_networks_own(network, registry):
    """On colour, the model's input layers apply keras.applications' own preprocess_input to RGB
    (Caffe mode: RGB -> BGR, then the BGR means), not the gray-pixel shortcut."""
    from benchbox_keras import engine
    from benchbox_keras.applications import application

    keras = engine.import_keras()
    options = {**registry.get("backbone", f"keras/{network}").defaults, "weights": "none", "input_size": [32, 32]}
    model, _ = engine.build_model(network, options, 2, 0, channels=3)
    pre = keras.Model(model.input, model.get_layer("imagenet_preprocess").output)
    x = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3)).astype("float32")
    module = "vgg19" if network == "vgg19" else application(network)[1]  # vgg19: the study's; vgg16: the family's
    expected = getattr(keras.applications, module).preprocess_input(x.copy())
    assert np.allclose(np.asarray(pre.predict(x, verbose=0)), expected, atol=1e-3)
    assert ("rgb_to_bgr" in [layer.name for layer in model.layers]) == (network != "efficientnet_b0")


@needs_torch
@pytest.mark.slow
def test_torch_colour_fold_passes_the_kit_and_sees_colour(registry):
    from benchbox.testing import check_backbone

    b = registry.get("backbone", "torch/mobilenet_v2")
    options = {"input_size": [32, 32]}
    check_backbone(b, options=options, channels=3, class_counts=(3,))
    model = b.fit(
        FoldJob(
            *hue_job(3, n=8),
            hue_job(3, n=2)[0],
            2,
            {**b.defaults, "weights": "none", **options},
            TrainingConfig(epochs=1, batch_size=8),
            seed=5,
        )
    )
    maps = b.explain(model, hue_job(3)[0][:2], np.array([0, 1]))  # Grad-CAM on colour input
    assert maps.shape[0] == 2 and maps.ndim == 3 and np.isfinite(maps).all()
    # torchvision's MobileNet v2 with random weights passes next to nothing at 32 px (outputs differ by
    # ~1e-9 between any two images), so whether the network sees colour is asked of a small timm ResNet
    colour_sees_hue(registry.get("backbone", "timm/resnet10t"), {"input_size": [32, 32]})


@needs_torch
def test_torch_normalises_each_colour_channel_with_its_own_imagenet_statistics():
    import torch

    from benchbox_torch.engine import BenchboxNet, images_tensor

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    net = BenchboxNet(torch.nn.Identity(), torch.nn.Identity(), mean, std, [])
    rgb = np.stack([square(RED, (4, 6)), square(GREEN, (4, 6))])
    x = images_tensor(rgb)
    assert tuple(x.shape) == (2, 3, 4, 6)
    out = net.normalize(x).numpy()
    for c in range(3):
        assert np.allclose(out[:, c], (rgb[..., c] / 255.0 - mean[c]) / std[c], atol=1e-6)
    gray = images_tensor(rgb_to_gray(rgb))  # grayscale: (N, 1, H, W), repeated to 3 as before
    assert tuple(gray.shape) == (2, 1, 4, 6)
    assert np.allclose(net.normalize(gray).numpy(), net.normalize(images_tensor(gray_to_rgb(rgb_to_gray(rgb)))).numpy())
    one = BenchboxNet(torch.nn.Identity(), torch.nn.Identity(), (0.5,), (1 / 2048,), [])  # TorchXRayVision's
    assert np.allclose(one.normalize(x).numpy(), one.normalize(gray).numpy(), atol=1e-3)  # colour -> luma


@needs_torch
@pytest.mark.slow
def test_hue_is_learned_in_rgb_and_not_in_gray_end_to_end(tmp_path):
    """A folder where the class is the hue (red or green squares of the same luma), as two data sets of
    one cross-dataset suite: gray and rgb. The rgb one learns the hue; the gray one sees the same image
    in both classes and cannot; and across (a gray set repeated to RGB for the rgb-trained model, the
    rgb set as its luma for the gray-trained one) neither can."""
    root = tmp_path / "hue"
    for name, colour in (("red", RED), ("green", GREEN)):
        (root / name).mkdir(parents=True)
        for i in range(16):
            Image.fromarray(square(colour, (32, 32), seed=100 + i)).save(root / name / f"p{i}.png")
    suite = write_suite(
        tmp_path / "hue.toml",
        f"""
        name = "hue"
        output_dir = "{tmp_path / "runs"}"
        seed = 1
        [protocol]
        kind = "cross-dataset"
        k = 2
        [training]
        epochs = 15
        batch_size = 8
        [datasets.hue-gray]
        plugin = "folder"
        root = "{root}"
        [datasets.hue-rgb]
        plugin = "folder"
        root = "{root}"
        color = "rgb"
        [backbones.resnet]
        plugin = "timm/resnet10t"
        weights = "none"
        input_size = [32, 32]
        """,
    )
    out = run_cli("run", str(suite), env={"BENCHBOX_CACHE": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    import pandas as pd

    auc = {(r.trained_on, r.tested_on): r.auc for r in pd.read_csv(run_dir / "cross_dataset.csv").itertuples()}
    assert auc[("hue-rgb", "hue-rgb")] >= 0.8, auc
    assert auc[("hue-gray", "hue-gray")] <= 0.6, auc  # below chance: twins of opposite labels across folds
    # across: every red image and its green twin are one image to the model, so exactly chance
    assert auc[("hue-rgb", "hue-gray")] == pytest.approx(0.5) and auc[("hue-gray", "hue-rgb")] == pytest.approx(0.5)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [pytest.param("keras/vgg19", marks=needs_keras), pytest.param("timm/resnet10t", marks=needs_torch)],
)
def test_colour_prefix_cache_gives_the_uncached_predictions(name, registry):
    """On colour folds the cached frozen prefix (Keras: through rgb_to_bgr, VGG's Caffe preprocessing)
    computes what the whole network does."""
    from conftest import fit_predict

    b = registry.get("backbone", name)
    x, y = hue_job(3, size=(32, 40), n=12)
    base = {**b.defaults, "weights": "none", "input_size": [32, 40]}
    if name.startswith("timm/"):
        base["freeze"] = "0.5"  # a frozen prefix to cache

    def job(cache):
        return FoldJob(x[:8], y[:8], x[8:], 2, {**base, "cache_prefix": cache}, TrainingConfig(1, 4), seed=3)

    plain, cached = fit_predict(b, job(False)), fit_predict(b, job(True))
    assert plain.info["prefix_cache"].startswith("off") and cached.info["prefix_cache"] == "computed"
    assert np.ptp(plain.probabilities[:, 0]) > 1e-4  # the images get different outputs: the check can fail
    np.testing.assert_allclose(cached.probabilities, plain.probabilities, atol=1e-5)
