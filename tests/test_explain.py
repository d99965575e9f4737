"""Grad-CAM explanations ([explain], plugins/benchbox_explain): heat-share arithmetic, the seeded sample,
the map contract, the fold inspector through the harness (never fails a fold, never changes a metric),
what validate refuses (a backbone that cannot explain, a layer the network does not have), a planted
border shortcut that moves the heat to the border, a Keras smoke test, and `benchbox explain` on a run."""

from __future__ import annotations

import numpy as np
import pytest

from benchbox import hookimpl
from benchbox.contracts import Backbone, Chosen, FoldJob, InspectRequest, TrainingConfig
from benchbox.errors import SuiteError
from benchbox.execute.harness import run_fold
from benchbox.execute.store import arrays_npz
from benchbox_explain import maps as ex
from benchbox_explain import views
from benchbox_explain.inspector import GradCam
from conftest import ROOT, needs_keras, needs_torch, run_cli, write_suite


# --- arithmetic (fast) ------------------------------------------------------------------------
def test_heat_share_of_an_even_map_is_the_area_of_each_region():
    centre, border = ex.heat_share(np.ones((1, 7, 7)), size=(100, 100))[0]
    assert centre == pytest.approx(0.36, abs=1e-9)  # 60 x 60 of 100 x 100
    assert border == pytest.approx(0.36, abs=1e-9)  # 1 - 80 x 80 / 100 x 100


def test_heat_share_follows_where_the_heat_is():
    top = np.zeros((20, 20))
    top[0, :] = 1.0  # a marker row at the top edge
    middle = np.zeros((20, 20))
    middle[9:11, 9:11] = 1.0
    shares = ex.heat_share(np.stack([top, middle, np.zeros((20, 20))]), size=(200, 200))
    assert shares[0, 1] > 0.95 and shares[0, 0] == 0
    assert shares[1, 0] == pytest.approx(1.0) and shares[1, 1] == 0
    assert np.isnan(shares[2]).all()  # no heat: no share, rather than a made-up number


def test_boxes_match_the_lungs_blackout_probe():
    from benchbox.data.probes import lungs_blackout

    box, _ = ex.regions((50, 70), centre=0.6)
    blacked = lungs_blackout(np.full((50, 70), 255, dtype=np.uint8), 0.6)
    assert np.array_equal(box, blacked == 0)


def test_share_table_gives_each_class_its_own_accuracy_and_blackout_accuracy():
    from types import SimpleNamespace as NS

    from benchbox.execute.records import CellKey

    std, blackout = CellKey("d", "b"), CellKey("d", "b", probe="lungs-blackout")
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    records = {  # the standard cell: class 0 all right, class 1 half; with the lungs blacked out: the reverse
        std: [NS(y_true=y, predicted=np.array([0, 0, 0, 0, 1, 1, 0, 0]))],
        blackout: [NS(y_true=y, predicted=np.array([1, 1, 1, 1, 1, 1, 1, 1]))],
    }
    explained = [{"cell": std, "classes": ["covid", "normal"], "maps": np.ones((2, 4, 4)), "y_true": np.array([0, 1]),
                  "input_size": [40, 40]}]  # fmt: skip
    table = views.share_frame(explained, records).set_index("class")
    assert table.loc["covid", "accuracy %"] == "100.0" and table.loc["normal", "accuracy %"] == "50.0"
    assert table.loc["covid", "lungs-blackout accuracy %"] == "0.0"
    assert table.loc["normal", "lungs-blackout accuracy %"] == "100.0"


def _explained(cell, maps, input_size=(64, 80), layer="auto"):
    n = len(maps)
    return {"cell": cell, "classes": ["covid", "normal"], "maps": np.asarray(maps, dtype=np.float16),
            "y_true": np.arange(n) % 2, "input_size": np.array(input_size), "layer": np.array(layer)}  # fmt: skip


def test_share_table_shows_each_cell_s_map_size():
    from benchbox.execute.records import CellKey

    rng = np.random.default_rng(0)
    coarse, fine = CellKey("d", "keras"), CellKey("d", "torch")
    table = views.share_frame([_explained(coarse, rng.random((4, 2, 3))), _explained(fine, rng.random((4, 8, 10)))])
    assert dict(zip(table["backbone"], table["map"])) == {"keras": "2x3", "torch": "8x10"}
    big = views.share_frame([_explained(fine, ex.check_maps(rng.random((2, 56, 56)), 2, "x"))])
    assert set(big["map"]) == {"28x28+"}  # stored shrunk to MAX_SIDE: the native map was larger


def test_coarse_or_flat_maps_get_a_note_naming_the_fix():
    from benchbox.execute.records import CellKey

    rng = np.random.default_rng(1)
    peaked = np.zeros((4, 8, 10))
    peaked[:, 3:5, 4:6] = 1.0  # a clear spot: fine enough to say where
    notes = views.coarse_notes(
        [
            _explained(CellKey("d", "mobilenet"), rng.random((4, 2, 3))),  # MobileNet v2 at 64x80
            _explained(CellKey("d", "fine"), peaked),
            _explained(CellKey("d", "flat"), 0.9 + 0.1 * rng.random((4, 8, 10)), layer="block_6_expand_relu"),
        ]
    )
    assert len(notes) == 2
    coarse, flat = notes
    assert coarse.startswith("d x mobilenet: ") and "2x3 cells at a 64x80 input" in coarse
    assert "too coarse to locate anything" in coarse and 'layer = "..." in [explain]' in coarse
    assert "docs/validity.md" in coarse
    assert flat.startswith("d x flat: ") and "layer 'block_6_expand_relu'" in flat and "nearly flat" in flat
    assert not any("d x fine" in n for n in notes)


def test_the_report_section_carries_the_coarse_map_note(tmp_path):
    from types import SimpleNamespace as NS

    import benchbox_explain
    from benchbox.execute.records import CellKey

    cell = CellKey("d", "mobilenet")
    folder = tmp_path / ex.FOLDER
    folder.mkdir()
    data = _explained(cell, np.random.default_rng(2).random((4, 2, 3)))
    data.update(ids=np.array(["a", "b", "c", "e"]), predicted=np.array([0, 1, 0, 1]),
                probability=np.ones(4, dtype=np.float32), images=np.zeros((4, 16, 20), dtype=np.uint8))  # fmt: skip
    del data["cell"]
    (folder / f"{cell.slug}__fold00.npz").write_bytes(arrays_npz({**data, "classes": np.array(["covid", "normal"])}))
    record = NS(fold=0, y_true=np.array([0, 1]), predicted=np.array([0, 1]), info={}, cell=cell)
    result = NS(run_dir=tmp_path, cells={cell: [record]}, manifest={}, records=[record])
    section = benchbox_explain.report_section(result)
    assert list(section.table["map"]) == ["2x3", "2x3"]
    assert any("d x mobilenet" in n and "too coarse to locate anything" in n for n in section.notes)


def test_sample_is_seeded_per_class_and_mixes_right_and_wrong():
    ids = [f"img-{i}" for i in range(30)]
    y = np.repeat([0, 1, 2], 10)
    pred = y.copy()
    pred[[0, 1, 2, 10]] = 1  # class 0 has three wrong, class 1 one wrong (10 -> predicted 1 is right)
    pred[10] = 2
    idx = ex.select(y, pred, ids, 4, seed=5, num_classes=3)
    assert len(idx) == 12
    for c in range(3):
        mine = idx[y[idx] == c]
        assert len(mine) == 4
    wrong0 = [i for i in idx if y[i] == 0 and pred[i] != 0]
    assert len(wrong0) == 2  # half of them wrong where there are enough wrong ones
    assert [i for i in idx if y[i] == 1 and pred[i] != 1] == [10]  # the only wrong one of class 1
    assert [i for i in idx if y[i] == 2 and pred[i] != 2] == []  # none wrong: all correct
    assert np.array_equal(idx, ex.select(y, pred, ids, 4, seed=5, num_classes=3))
    assert not np.array_equal(idx, ex.select(y, pred, ids, 4, seed=6, num_classes=3))


def test_map_contract():
    with pytest.raises(ValueError, match="shape"):
        ex.check_maps(np.zeros((2, 5)), 2, "p")
    with pytest.raises(ValueError, match="NaN"):
        ex.check_maps(np.full((1, 3, 3), np.nan), 1, "p")
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        ex.check_maps(np.full((1, 3, 3), 2.0), 1, "p")
    big = ex.check_maps(np.random.default_rng(0).uniform(0, 0.5, (2, 56, 70)), 2, "p")
    assert big.dtype == np.float16 and big.shape == (2, 28, 28) and float(big.max()) == 1.0


# --- the harness (fast: numpy backbones) ---------------------------------------------------------
class Centroid(Backbone):
    name = "test/centroid"
    framework = "numpy"

    def fit(self, job):
        x = job.x_train.reshape(len(job.x_train), -1) / 255.0
        return np.stack([x[job.y_train == c].mean(0) for c in range(job.num_classes)])

    def predict(self, model, images, ids=None):
        d = ((images.reshape(len(images), -1)[:, None] / 255.0 - model[None]) ** 2).mean(2)
        e = np.exp(-20 * (d - d.min(1, keepdims=True)))
        return e / e.sum(1, keepdims=True)


class Broken(Centroid):
    name = "test/broken"

    def explain(self, model, images, target_classes, layer="auto"):
        return np.full((len(images), 4, 4), 3.0)  # outside [0, 1]


def explain_request(y_test, alias: str = "b", **table) -> InspectRequest:
    """What the plan hands the harness for a suite with [explain] (``table``) on one fold."""
    inspector = GradCam()
    chosen = Chosen("explain", inspector.settings(table, 0), inspector)
    return InspectRequest((chosen,), np.asarray(y_test), ("a", "b", "c"), alias)


def _job(explain: bool, seed: int = 0, n: int = 36, size: int = 32):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = (rng.uniform(0, 60, (n, size, size)) + 60 * y[:, None, None]).astype(np.uint8)
    tr, te = np.arange(0, n - 12), np.arange(n - 12, n)
    request = explain_request(y[te], images_per_class=2) if explain else None
    return FoldJob(
        x[tr],
        y[tr],
        x[te],
        3,
        {},
        TrainingConfig(epochs=1, batch_size=8),
        seed,
        train_ids=[f"s{i}" for i in tr],
        test_ids=[f"s{i}" for i in te],
        inspect=request,
    ), y[te]


def test_a_backbone_that_cannot_explain_still_finishes_its_fold_with_the_same_numbers():
    plain = run_fold(Centroid(), "test/centroid", _job(False)[0], "f0")
    job, _ = _job(True)
    seen = {}

    class Spy(Centroid):
        def fit(self, job):
            seen["explain"] = job.inspect  # the test labels must not reach the backbone
            return super().fit(job)

    explained = run_fold(Spy(), "test/centroid", job, "f0")
    assert seen["explain"] is None
    assert np.array_equal(plain.probabilities, explained.probabilities)
    assert explained.info["explain"]["status"].startswith("cannot explain")
    assert explained.artefacts["explain"].arrays is None  # no maps to store
    assert explained.artefacts["explain"].warning.startswith("no Grad-CAM maps: cannot explain")


def test_maps_breaking_the_contract_are_a_warning_not_a_failed_fold():
    out = run_fold(Broken(), "test/broken", _job(True)[0], "f0")
    assert out.probabilities.shape == (12, 3)
    assert "outside [0, 1]" in out.info["explain"]["status"]


def test_explain_on_a_run_without_explanations_says_what_to_do(tmp_path):
    from benchbox.execute.store import RunStore

    RunStore(tmp_path / "run").create({"suite": "s", "suite_digest": "x"}, "")
    res = run_cli("explain", tmp_path / "run")
    assert res.returncode != 0
    assert "[explain]" in res.stdout + res.stderr
    assert "cannot be explained afterwards" in res.stdout + res.stderr
    assert "Traceback" not in res.stderr


def test_explain_table_is_validated(tmp_path, registry):
    from benchbox.define.suite import load_suite
    from benchbox.errors import SuiteError

    body = """
    name = "s"
    [datasets.syn]
    plugin = "synthetic"
    [backbones.c]
    plugin = "torch/mobilenet_v2"
    """
    plain = load_suite(write_suite(tmp_path / "a.toml", body), registry)
    assert plain.inspectors == {} and "explain" not in plain.raw
    with_explain = load_suite(write_suite(tmp_path / "b.toml", body + "[explain]\nimages_per_class = 3\n"), registry)
    assert with_explain.inspectors["explain"].options["images_per_class"] == 3 and with_explain.digest != plain.digest
    with pytest.raises(SuiteError) as err:
        load_suite(write_suite(tmp_path / "c.toml", body + "[explain]\nimages = 3\nframe = 0.7\n"), registry)
    assert "explain.images: unknown key" in str(err.value) and "frame" in str(err.value)


# --- a planted border shortcut (slow: trains a tiny torch CNN) ----------------------------------
def tiny_net():
    """A three-convolution network; torch is imported here, not when the tests are collected (3.5 s in
    each test worker, for the fast tier's tests that never train)."""
    import torch

    class TinyNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.base = torch.nn.Sequential(
                torch.nn.Conv2d(1, 8, 3, padding=1),
                torch.nn.BatchNorm2d(8),
                torch.nn.ReLU(),
                torch.nn.Conv2d(8, 16, 3, stride=2, padding=1),
                torch.nn.BatchNorm2d(16),
                torch.nn.ReLU(),
                torch.nn.Conv2d(16, 16, 3, stride=2, padding=1),
                torch.nn.ReLU(),
            )  # a 16 x 16 feature map at 64 px; the head keeps a coarse 4 x 4 layout
            self.head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(256, 3))

        def forward(self, x):
            return self.head(self.base(x.float() / 255.0))

    return TinyNet()


class TinyTorch(Backbone):
    """A three-convolution network that trains in a second: Grad-CAM through the torch engine's
    gradcam module (the grad-cam package), target layer "auto" = ``net.base``."""

    name = "tiny/cnn"
    framework = "torch"
    defaults = {"input_size": [64, 64], "weights": "none"}

    def fit(self, job):
        import torch

        torch.manual_seed(job.seed)
        net = tiny_net().train()
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        x = torch.from_numpy(job.x_train.copy()).unsqueeze(1)
        y = torch.from_numpy(np.asarray(job.y_train, dtype=np.int64))
        for _ in range(job.training.epochs):
            for i in range(0, len(x), job.training.batch_size):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(net(x[i : i + 8]), y[i : i + 8]).backward()
                opt.step()
        return net.eval()

    def predict(self, model, images, ids=None):
        import torch

        with torch.no_grad():
            return torch.softmax(model(torch.from_numpy(images.copy()).unsqueeze(1)).double(), 1).numpy()

    def explain(self, model, images, target_classes, layer="auto"):
        from benchbox_torch import gradcam

        return gradcam.explain(model, images, target_classes, layer)


class TinyPlugin:
    @hookimpl
    def benchbox_backbones(self):
        return [TinyTorch()]


def _border_share(shortcut: bool) -> tuple[float, float]:
    from benchbox.plugins import load_registry

    syn = load_registry().get("dataset", "synthetic")
    options = {**syn.defaults, "images": 72, "patients": 72, "shortcut": shortcut, "signal": not shortcut}
    s = syn.samples(options, 1, None)
    x, y = s.load(s.table, (64, 64)), s.labels
    tr, te = np.arange(0, 54), np.arange(54, 72)
    job = FoldJob(
        x[tr],
        y[tr],
        x[te],
        3,
        {},
        TrainingConfig(epochs=20, batch_size=8),
        0,
        train_ids=list(s.table["id"].iloc[tr]),
        test_ids=list(s.table["id"].iloc[te]),
        inspect=explain_request(y[te], images_per_class=6),
    )
    out = run_fold(TinyTorch(), "tiny/cnn", job, "f0")
    assert out.info["explain"]["status"] == "ok", out.info["explain"]
    shares = ex.heat_share(out.artefacts["explain"].arrays["maps"], size=(64, 64))
    accuracy = float((out.probabilities.argmax(1) == y[te]).mean())
    return float(np.nanmean(shares[:, 1])), accuracy


@pytest.fixture
def one_thread():
    """A tiny network trains several times faster on one thread than on an oversubscribed CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
@needs_torch
def test_a_planted_border_marker_draws_the_heat_to_the_border(one_thread):
    border_marked, acc_marked = _border_share(shortcut=True)
    border_clean, _ = _border_share(shortcut=False)
    print(f"border heat share: {border_marked:.3f} with the marker, {border_clean:.3f} without")
    assert acc_marked >= 0.8  # the marker is learnt (the lungs carry no signal in this set)
    assert border_marked > border_clean + 0.1 and border_marked > 1.5 * border_clean, (border_marked, border_clean)


@pytest.mark.slow
@needs_torch
def test_a_run_with_explain_reports_and_draws_and_benchbox_explain_redraws(tmp_path, one_thread):
    from benchbox.define.suite import load_suite
    from benchbox.execute.runner import run_suite
    from benchbox.plugins import load_registry

    registry = load_registry(extra_plugins=[TinyPlugin()])
    suite_path = write_suite(
        tmp_path / "s.toml",
        f"""
        name = "explained"
        seed = 2
        output_dir = "{tmp_path / "runs"}"
        [protocol]
        k = 2
        [training]
        epochs = 6
        batch_size = 8
        [datasets.marked]
        plugin = "synthetic"
        images = 36
        patients = 36
        shortcut = true
        [backbones.tiny]
        plugin = "tiny/cnn"
        [probes.lungs-blackout]
        [explain]
        images_per_class = 2
        """,
    )
    result = run_suite(load_suite(suite_path, registry), registry)
    run = result.run_dir
    assert len(list((run / "explanations").glob("*.npz"))) == 4  # 2 folds x (standard + lungs-blackout)
    section = next(s for s in result.sections if "Grad-CAM" in s.title)
    assert {"centre heat %", "border heat %", "lungs-blackout accuracy %"} <= set(section.table.columns)
    assert (run / "heat_share.csv").exists()
    html = (run / "report.html").read_text()
    assert "Grad-CAM: where each network looks" in html and "gradcam__marked__tiny.png" in html

    out = tmp_path / "panels"
    res = run_cli("explain", run, "--out", out, "--images", "1")
    assert res.returncode == 0, res.stderr
    assert (out / "gradcam__marked__tiny.png").stat().st_size > 1000
    assert "border heat %" in res.stdout and (out / "heat_share.csv").exists()


# --- Keras (slow) ------------------------------------------------------------------------------
@pytest.mark.slow
@needs_keras
def test_keras_grad_cam_smoke(registry):
    """A tiny model in the Keras engine's layout (gray_to_rgb, preprocessing, a nested base model,
    pooling, a softmax Dense), explained through KerasBackbone.explain: auto and a named layer."""
    from benchbox_keras.engine import TrainedModel, import_keras

    keras = import_keras()
    keras.utils.set_random_seed(0)
    base_in = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_a")(base_in)
    h = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv_b")(h)
    base = keras.Model(base_in, h, name="tiny_base")
    inputs = keras.Input((32, 32, 1), name="xray")
    x = keras.layers.Concatenate(name="gray_to_rgb")([inputs, inputs, inputs])
    x = keras.layers.Normalization(mean=127.5, variance=127.5**2, name="imagenet_preprocess")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pooling")(base(x))
    model = keras.Model(
        inputs, keras.layers.Dense(3, activation="softmax", name="predictions")(x), name="benchbox_tiny"
    )
    images = np.random.default_rng(0).integers(0, 255, (5, 32, 32), dtype=np.uint8)
    trained = TrainedModel(model, None, [], None, 4)
    backbone = registry.get("backbone", "keras/mobilenet_v2")
    maps = backbone.explain(trained, images, np.array([0, 1, 2, 0, 1]))
    assert maps.shape == (5, 16, 16) and maps.min() >= 0 and maps.max() <= 1
    assert np.allclose(maps.max(axis=(1, 2))[maps.max(axis=(1, 2)) > 0], 1.0)
    named = backbone.explain(trained, images, np.array([0, 1, 2, 0, 1]), layer="conv_a")
    assert named.shape == (5, 32, 32)
    from benchbox.errors import BenchboxError

    with pytest.raises(BenchboxError, match="no such layer"):
        backbone.explain(trained, images, np.zeros(5, dtype=int), layer="conv_z")


def test_a_backbone_that_cannot_explain_is_refused_before_training(tmp_path):
    from benchbox import hookimpl
    from benchbox.define.suite import load_suite
    from benchbox.execute.runner import Reporter, run_suite
    from benchbox.plugins import load_registry

    class Plugin:
        @hookimpl
        def benchbox_backbones(self):
            backbone = Centroid()
            backbone.defaults = {"input_size": [32, 32]}
            return [backbone]

    class Collect(Reporter):
        messages: list[str] = []

        def message(self, text):
            self.messages.append(text)

    registry = load_registry(extra_plugins=[Plugin()])
    suite = write_suite(
        tmp_path / "s.toml",
        f"""
        name = "no-cam"
        output_dir = "{tmp_path / "runs"}"
        [protocol]
        k = 2
        [datasets.syn]
        plugin = "synthetic"
        images = 12
        patients = 12
        [backbones.c]
        plugin = "test/centroid"
        [explain]
        images_per_class = 1
        """,
    )
    # issue 24: said by `validate` (and before `run` trains anything), not warned once per fold afterwards
    with pytest.raises(SuiteError, match=r"backbones\.c: test/centroid cannot draw Grad-CAM maps"):
        run_suite(load_suite(suite, registry), registry, reporter=Collect())
    assert not (tmp_path / "runs").exists()


@needs_torch
def test_timm_backbones_explain_at_a_map_of_at_least_seven_by_seven():
    """issue 24: Grad-CAM for timm/ backbones; "auto" takes the deepest stage map of 7x7 or more where the
    last one is coarser (resnet18 at 64x80: layer4 is 2x3, layer2 8x10)."""
    pytest.importorskip("pytorch_grad_cam")
    from benchbox.plugins import load_registry
    from benchbox_torch import engine, gradcam

    backbone = load_registry().get("backbone", "timm/resnet18")
    options = {**backbone.defaults, "weights": "none", "input_size": [64, 80]}
    net, _ = engine.build_model(backbone.spec(options), options, num_classes=3, seed=0)
    assert gradcam.auto_layer(net, (64, 80))[0] == "base.model.layer2"
    assert gradcam.auto_layer(net, (320, 320))[0] == "base"  # layer4 is 10x10: the head's own map
    images = np.random.default_rng(0).integers(0, 255, (3, 64, 80), dtype=np.uint8)
    maps = backbone.explain(type("Trained", (), {"net": net, "batch_size": 2})(), images, np.array([0, 1, 2]))
    assert maps.shape == (3, 8, 10) and maps.min() >= 0 and np.allclose(maps.max(axis=(1, 2)), 1)
    described = backbone.describe(options, (64, 80))
    assert (
        "base.model.layer2 (8x10)" in described["explain_layers"] and described["explain_auto"] == "base.model.layer2"
    )


# --- issue 24: [explain] layers resolved and explainability checked at validate ---------------------------
class Mapped(Centroid):
    """A backbone that explains and lists its feature maps (recording each network it builds to list them)."""

    name = "test/mapped"
    defaults = {"input_size": [32, 32]}
    builds: list = []

    def explain(self, model, images, target_classes, layer="auto"):
        return np.ones((len(images), 4, 4))

    def feature_maps(self, options):
        Mapped.builds.append(dict(options))
        return [("stem", (16, 16)), ("block1", (8, 8)), ("block1_relu", (8, 8)), ("block2", (4, 4))]

    def embed(self, images, options, training=None):
        return images.reshape(len(images), -1).astype(np.float32)


class MappedPlugin:
    @hookimpl
    def benchbox_backbones(self):
        return [Mapped()]


def mapped_suite(tmp_path, explain: str, backbones: str = '[backbones.m]\nplugin = "test/mapped"\n'):
    return write_suite(
        tmp_path / "s.toml",
        f'name = "maps"\n[datasets.syn]\nplugin = "synthetic"\nimages = 12\npatients = 12\n{backbones}[explain]\n{explain}\n',
    )


def test_validate_names_a_layer_the_network_lacks_with_its_maps_by_size(tmp_path, monkeypatch):
    from benchbox.define.suite import load_suite
    from benchbox.plugins import load_registry

    monkeypatch.setenv("BENCHBOX_CACHE", str(tmp_path / "cache"))
    registry = load_registry(extra_plugins=[MappedPlugin()])
    Mapped.builds.clear()
    path = mapped_suite(tmp_path, 'layer = "blok1"')
    with pytest.raises(SuiteError) as err:
        load_suite(path, registry, check_networks=True)
    assert str(path) in str(err.value)
    assert err.value.problems == [
        "explain.layer: 'blok1' is not a feature map of test/mapped (backbone m); did you mean block1, block2, block1_relu? "
        "its 4 feature maps at 32x32, by size: 16x16: 1 (stem), 8x8: 2 (block1 ... block1_relu), 4x4: 1 (block2); "
        "`benchbox backbones describe test/mapped --input 32x32 --layers` lists every name"
    ]
    assert Mapped.builds[0]["weights"] == "none"  # random weights: nothing downloaded to check a name
    load_suite(path, registry)  # a suite only read (verify, data describe) builds no network
    assert len(Mapped.builds) == 1
    load_suite(mapped_suite(tmp_path, 'layer = "block1"'), registry, check_networks=True)
    assert len(Mapped.builds) == 1  # a name the earlier build listed is accepted from the cache, unbuilt
    with pytest.raises(SuiteError):
        load_suite(mapped_suite(tmp_path, 'layer = "blok1"'), registry, check_networks=True)
    assert len(Mapped.builds) == 2  # a refusal is always from a fresh build: a stale listing cannot refuse


def test_auto_builds_nothing_and_one_build_serves_two_aliases_of_one_network(tmp_path, monkeypatch):
    from benchbox.define.suite import load_suite
    from benchbox.plugins import load_registry

    monkeypatch.setenv("BENCHBOX_CACHE", str(tmp_path / "cache"))
    registry = load_registry(extra_plugins=[MappedPlugin()])
    Mapped.builds.clear()
    load_suite(mapped_suite(tmp_path, 'layer = "auto"'), registry, check_networks=True)
    assert Mapped.builds == []
    two = '[backbones.m]\nplugin = "test/mapped"\n[backbones.n]\nplugin = "test/mapped"\n'
    with pytest.raises(SuiteError) as err:
        load_suite(mapped_suite(tmp_path, 'layer = { m = "stem", n = "block3" }', two), registry, check_networks=True)
    assert len(Mapped.builds) == 1
    assert [p.split(":")[0] for p in err.value.problems] == ["explain.layer.n"]
    assert "(backbone n)" in err.value.problems[0]


def test_a_frozen_features_scheme_cannot_be_explained_and_is_refused_at_validate(tmp_path):
    from benchbox.define.suite import load_suite
    from benchbox.plugins import load_registry

    registry = load_registry(extra_plugins=[MappedPlugin()])
    probe = '[backbones.m]\nplugin = "test/mapped"\nscheme = "linear-probe"\n'
    with pytest.raises(SuiteError, match=r"backbones\.m\.scheme: 'linear-probe' classifies frozen features"):
        load_suite(mapped_suite(tmp_path, "", probe), registry)


@needs_torch
def test_validate_resolves_a_torch_layer_in_the_network_it_would_train(tmp_path, registry):
    from benchbox.define.suite import load_suite

    torch_suite = '[backbones.t]\nplugin = "torch/mobilenet_v2"\nweights = "none"\ninput_size = [64, 80]\n'
    with pytest.raises(SuiteError) as err:
        load_suite(mapped_suite(tmp_path, 'layer = { t = "base.66" }', torch_suite), registry, check_networks=True)
    (problem,) = err.value.problems
    assert problem.startswith("explain.layer.t: 'base.66' is not a feature map of torch/mobilenet_v2 (backbone t)")
    assert "did you mean base.6" in problem and "8x10: 36 (base.4.conv.1.0 ... base.7.conv.0)" in problem
    load_suite(mapped_suite(tmp_path, 'layer = { t = "base.6" }', torch_suite), registry, check_networks=True)


@pytest.mark.slow
@needs_keras
def test_validate_resolves_a_keras_layer_and_says_it_in_one_line(tmp_path):
    text = (ROOT / "suites" / "quickstart.toml").read_text().replace('"block_6_expand_relu"', '"block_6_expand_rel"')
    path = write_suite(tmp_path / "q.toml", text)
    res = run_cli("validate", path, "--no-data", cwd=ROOT)
    out = " ".join((res.stdout + res.stderr).split())  # rich's line wrapping undone
    assert res.returncode == 1 and "Traceback" not in out
    assert f"error: {path}: 1 problem(s) - explain.layer.mobilenet_v2-keras: 'block_6_expand_rel' is not a " in out
    assert "feature map of keras/mobilenet_v2 (backbone mobilenet_v2-keras); did you mean block_6_expand_relu" in out
    assert "8x10: 26 (block_3_depthwise ... block_6_expand_relu)" in out


@pytest.mark.slow
@needs_torch
def test_backbones_describe_layers_lists_every_feature_map_a_layer_may_name(capsys):
    from benchbox.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["backbones", "describe", "torch/mobilenet_v2", "--input", "64x80", "--layers"])
    out = capsys.readouterr().out
    assert exit_.value.code in (0, None), out
    assert "210 feature-map layers of torch/mobilenet_v2 at 64x80:" in out
    lines = [line.split() for line in out.splitlines() if line.startswith("  base")]
    assert ["base.6", "8x10"] in lines and ["base", "2x3"] in lines and len(lines) == 209  # and head.0, 1x1
