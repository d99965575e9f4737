"""Schemes (fine-tune | linear-probe | knn) and the embedding cache (benchbox/execute/schemes.py,
benchbox/execute/embeddings.py).

Fast tests use an in-process encoder (8x8 thumbnails as features, no framework) that counts the images
it embeds; the slow test runs the real CLI with timm/resnet18 under all three schemes and counts the
torch encoder's forward passes of a second suite over the same images (zero)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from benchbox import hookimpl
from benchbox.contracts import Backbone, FoldJob, TrainingConfig
from benchbox.define.suite import load_suite
from benchbox.errors import SuiteError
from benchbox.execute.embeddings import EmbeddingCache, encoder_key, image_hashes, parse_size
from benchbox.execute.probe import fit_linear_probe, fit_linear_probe_direct, inner_splits, logistic_lbfgs
from benchbox.execute.runner import run_suite
from benchbox.execute.schemes import FrozenScheme, smallest_training_fold
from benchbox.execute.store import RunStore
from benchbox.plugins import load_registry
from benchbox.results.views.leaderboard import collect
from conftest import HAS_TORCH, run_cli, write_suite


class Thumbs(Backbone):
    """Features: 8x8 mean-pooled thumbnails. Counts embedded images; fine-tunes as nearest centroid."""

    name = "fake/thumbs"
    framework = "none"
    defaults = {"input_size": [32, 32], "weights": "none"}
    embedded = 0

    def embed(self, images, options, training=None):
        Thumbs.embedded += len(images)
        x = np.asarray(images, dtype=np.float32)
        n, h, w = x.shape
        return x[:, : h // 8 * 8, : w // 8 * 8].reshape(n, 8, h // 8, 8, w // 8).mean(axis=(2, 4)).reshape(n, -1)

    def fit(self, job):
        x = self.embed(job.x_train, job.options)
        return np.stack([x[job.y_train == c].mean(axis=0) for c in range(job.num_classes)])

    def predict(self, model, images, ids=None):
        d = ((self.embed(images, {})[:, None, :] - model[None]) ** 2).sum(-1)
        e = np.exp(-(d - d.min(axis=1, keepdims=True)) / (d.std() + 1e-9))
        return e / e.sum(axis=1, keepdims=True)


class NoEmbed(Backbone):
    name = "fake/noembed"
    framework = "none"
    defaults = {"input_size": [32, 32], "weights": "none"}


class Plugin:
    @hookimpl
    def benchbox_backbones(self):
        return [Thumbs(), NoEmbed()]


@pytest.fixture(scope="module")
def reg():
    return load_registry(extra_plugins=[Plugin()])


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCHBOX_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "embeddings"


SUITE = """
name = "schemes"
seed = 2
output_dir = "{out}"
evaluators = ["paper"]
{top}
[protocol]
k = 3
grouped = true
[training]
epochs = 1
batch_size = 8
[datasets.syn]
plugin = "synthetic"
images = 36
patients = 12
{backbones}
"""


def suite_file(tmp_path, backbones, top="", name="s.toml"):
    return write_suite(tmp_path / name, SUITE.format(out=tmp_path / "runs", top=top, backbones=backbones))


def entry(alias, scheme=None, extra=""):
    line = f'scheme = "{scheme}"\n' if scheme else ""
    return f'[backbones.{alias}]\nplugin = "fake/thumbs"\n{line}{extra}\n'


# --- validation ---------------------------------------------------------------------------------------
def test_unknown_scheme_k_elsewhere_and_no_embed_are_named(tmp_path, reg):
    body = (
        entry("a", "linear_probe")
        + entry("b", "linear-probe", "k = 3")
        + '[backbones.c]\nplugin = "fake/noembed"\nscheme = "knn"\n'
    )
    with pytest.raises(SuiteError) as err:
        load_suite(suite_file(tmp_path, body, top='scheme = "knnn"'), reg)
    text = str(err.value)
    assert "backbones.a.scheme: unknown scheme 'linear_probe' (did you mean linear-probe?)" in text
    assert 'backbones.b.k: applies to scheme = "knn" only' in text
    assert "backbones.c.scheme: 'knn' needs frozen features, but backbone plugin fake/noembed cannot embed" in text
    assert "scheme: unknown scheme 'knnn' (did you mean knn?)" in text


def test_suite_default_scheme_and_k_default(tmp_path, reg):
    suite = load_suite(suite_file(tmp_path, entry("a") + entry("b", "fine-tune"), top='scheme = "knn"'), reg)
    assert suite.backbones["a"].scheme == "knn" and suite.backbones["a"].options["k"] == 11
    assert suite.backbones["b"].scheme == "fine-tune" and "k" not in suite.backbones["b"].options


def test_k_larger_than_a_training_fold_is_found_at_validate(tmp_path, reg):
    path = suite_file(tmp_path, entry("a", "knn", "k = 30"))
    with pytest.raises(SuiteError) as err:
        load_suite(path, reg, check_data=True)
    assert "backbones.a.k: k = 30 is larger than the smallest training fold of data set 'syn'" in str(err.value)
    load_suite(suite_file(tmp_path, entry("a", "knn", "k = 5"), name="ok.toml"), reg, check_data=True)


def test_smallest_training_fold():
    assert smallest_training_fold(np.array([0, 0, 0, 1, 1, 2, -1])) == 4  # fold 0 out: 3 + 1 train-only


# --- the linear probe ---------------------------------------------------------------------------------
def test_inner_cv_keeps_patients_apart_and_stays_in_the_training_fold():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    groups = [f"p{i // 2}" for i in range(40)]
    splits, how = inner_splits(y, groups, seed=1)
    assert "patient-grouped" in how and len(splits) == 5
    g = np.asarray(groups)
    for tr, te in splits:
        assert not set(g[tr]) & set(g[te])
        assert max(te) < 40  # indices of the training fold only
    x = rng.normal(size=(40, 6)) + y[:, None] * 1.5
    model, info = fit_linear_probe(x, y, groups, "none", seed=1)
    assert info["probe_C"] in info["probe_C_grid"]
    assert (model.predict(x) == y).mean() > 0.8


@pytest.mark.parametrize("d, classes, weight", [(2048, 3, "none"), (600, 2, "balanced"), (40, 3, "balanced")])
def test_row_space_probe_is_the_direct_probe(d, classes, weight):
    """The fast probe (row space, scikit-learn's lbfgs objective and stopping test without its overhead) and
    GridSearchCV over StandardScaler + LogisticRegression on all d features (float64): the same C, the same
    number of L-BFGS iterations, the same probabilities on unseen images; the same kind of fitted model."""
    rng = np.random.default_rng(d)
    n = 60
    y = np.arange(n) % classes
    x = np.abs(rng.normal(size=(n, d))).astype(np.float32)
    x[:, :8] += 0.7 * y[:, None]  # a weak signal in a few features, as random encoders give
    groups = [f"p{i // 2}" for i in range(n)]
    unseen = np.abs(rng.normal(size=(25, d))).astype(np.float32) + 0.35
    fast, info = fit_linear_probe(x, y, groups, weight, seed=4)
    # the fast probe computes in float64 (scikit-learn's lbfgs on float32 input stops on float32 rounding)
    direct, info_direct = fit_linear_probe_direct(x.astype(np.float64), y, groups, weight, seed=4)
    assert info == info_direct
    # the same L-BFGS iterates, stopped at the same one
    assert np.abs(fast.predict_proba(unseen) - direct.predict_proba(unseen)).max() < 1e-6
    assert fit_linear_probe_direct(x, y, groups, weight, seed=4)[1] == info  # on float32 as well, here
    lr, lr_direct = fast.steps[-1][1], direct.steps[-1][1]
    assert lr.coef_.shape == lr_direct.coef_.shape and list(lr.classes_) == list(lr_direct.classes_)
    assert lr.n_iter_[0] == lr_direct.n_iter_[0]


def test_inner_folds_are_scikit_learns_stratified_group_kfold():
    """The probe's own computation of StratifiedGroupKFold's folds gives scikit-learn's, fold for fold, over
    patients of one to four images, two to five classes, balanced and not, shuffled by many seeds."""
    from sklearn.model_selection import StratifiedGroupKFold

    from benchbox.execute.probe import stratified_group_test_folds

    rng = np.random.default_rng(11)
    for trial in range(60):
        classes = int(rng.integers(2, 6))
        patients = int(rng.integers(12, 60))
        images = rng.integers(1, 5, patients)
        groups = np.repeat([f"p{i}" for i in range(patients)], images)
        y = np.repeat(rng.integers(0, classes, patients), images)
        y[rng.random(len(y)) < 0.1] = 0  # a few patients with images of two classes
        smallest = np.bincount(y, minlength=classes).min()
        k = int(min(5, smallest, patients))
        if k < 2:
            continue
        seed = int(rng.integers(0, 2**31))
        theirs = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups)
        ours = stratified_group_test_folds(y, groups, k, seed)
        assert [list(test) for _, test in theirs] == [list(test) for test in ours], trial


def test_inner_splits_on_two_processes_choose_what_one_process_chooses(monkeypatch):
    """With --threads 2 (OMP_NUM_THREADS) the inner splits go to two worker processes: the same C and the
    same model as one process; where workers cannot start, this process scores them all."""
    import joblib

    rng = np.random.default_rng(7)
    y = np.arange(60) % 3
    x = np.abs(rng.normal(size=(60, 300))).astype(np.float32)
    x[:, :8] += 0.7 * y[:, None]
    groups = [f"p{i // 2}" for i in range(60)]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    one, info_one = fit_linear_probe(x, y, groups, "none", seed=3)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    two, info_two = fit_linear_probe(x, y, groups, "none", seed=3)
    assert info_one.pop("probe_processes") == 1 and info_two.pop("probe_processes") == 2
    assert info_one == info_two
    assert np.array_equal(one.predict_proba(x), two.predict_proba(x))

    def cannot_start(*args, **kwargs):
        raise OSError("no shared memory here")

    monkeypatch.setattr(joblib, "Parallel", cannot_start)
    alone, info_alone = fit_linear_probe(x, y, groups, "none", seed=3)
    assert info_alone.pop("probe_processes") == 1 and info_alone == info_one
    assert np.array_equal(alone.predict_proba(x), one.predict_proba(x))


def test_probe_processes_follow_the_threads_chosen_or_a_ray_folds_cpus(monkeypatch):
    from benchbox.execute.probe import probe_processes

    monkeypatch.delenv("BENCHBOX_PROBE_PROCESSES", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert probe_processes() == 1  # nothing chosen (a library call): one process
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert probe_processes() == 4  # --threads 4, or auto on 4 free cores
    monkeypatch.setenv("BENCHBOX_PROBE_PROCESSES", "1")
    assert probe_processes() == 1  # a Ray worker whose fold asked for one CPU


def test_logistic_lbfgs_is_scikit_learns_fit():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    for classes in (2, 3):
        x = rng.normal(size=(50, 12))
        y = rng.integers(0, classes, 50)
        x[:, 0] += y
        for c, weight in ((1e-3, None), (1.0, "balanced"), (100.0, None)):
            ours = logistic_lbfgs(x, y, c, weight == "balanced")
            theirs = LogisticRegression(C=c, max_iter=500, class_weight=weight).fit(x, y)
            assert ours.n_iter == theirs.n_iter_[0]
            assert np.abs(ours.predict_proba(x) - theirs.predict_proba(x)).max() < 1e-8


def test_one_image_of_a_class_still_fits_with_C_1():
    y = np.array([0, 0, 0, 0, 1])
    splits, how = inner_splits(y, None, 0)
    assert splits == [] and "C = 1" in how
    _, info = fit_linear_probe(np.arange(10.0).reshape(5, 2), y, None, "none", 0)
    assert info["probe_C"] == 1.0


def test_frozen_scheme_probabilities_cover_a_class_missing_from_the_fold(cache_dir):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 255, (12, 16, 16), dtype=np.uint8)
    y = np.array([0, 1] * 6)  # class 2 absent from the training fold
    job = FoldJob(x, y, x[:4], 3, {"scheme": "knn", "k": 3}, TrainingConfig(), seed=0)
    scheme = FrozenScheme(Thumbs(), "fake/thumbs", job.options, cache=EmbeddingCache(cache_dir.parent / "e"))
    model = scheme.fit(job)
    p = scheme.predict(model, x[:4], ["a", "b", "c", "d"])
    assert p.shape == (4, 3) and np.allclose(p.sum(1), 1) and (p[:, 2] == 0).all()


def test_encoder_is_timed_once_per_machine_and_batch_shape_then_kept(cache_dir):
    """The harness's throughput of a frozen scheme: the encoder timed (warm-up + timed call) the first time,
    its time kept beside its features; another fold or scheme of the same encoder and batch shape runs no
    encoder; another batch shape is timed; `cache clear --timings` drops the times, not the features."""
    rng = np.random.default_rng(2)
    x = rng.integers(0, 255, (12, 16, 16), dtype=np.uint8)
    y = np.array([0, 1] * 6)
    cache = EmbeddingCache(cache_dir.parent / "e")
    ticks = iter(np.arange(0.0, 100.0, 0.5))

    def clock():
        return float(next(ticks))

    seconds = {}
    for scheme in ("linear-probe", "knn"):
        job = FoldJob(x, y, x[:4], 2, {"scheme": scheme, **({"k": 3} if scheme == "knn" else {})}, TrainingConfig(), 0)
        frozen = FrozenScheme(Thumbs(), "fake/thumbs", job.options, cache=cache)
        model = frozen.fit(job)
        frozen.predict(model, x[:4], ["a", "b", "c", "d"])
        Thumbs.embedded = 0
        seconds[scheme], parts = frozen.network_seconds(model, x[:4], clock)
        if scheme == "linear-probe":
            assert Thumbs.embedded == 8 and parts["encoder_timing"] == "timed in this fold"  # warm-up + timed
        else:
            assert Thumbs.embedded == 0 and parts["encoder_timing"].startswith("kept from")
        assert parts["encoder_seconds"] == 0.5 and seconds[scheme] == parts["encoder_seconds"] + 0.5
    Thumbs.embedded = 0
    frozen.network_seconds(model, x[:3], clock)  # another batch shape
    assert Thumbs.embedded == 6
    removed, _ = cache.clear(timings_only=True)
    assert removed == 1 and not cache.timing_path(frozen._key()[0]).exists() and len(cache.entries()) == 12


# --- the cache ------------------------------------------------------------------------------------------
def compute_counter():
    calls = []

    def compute(images):
        calls.append(len(images))
        return np.asarray(images, dtype=np.float32).reshape(len(images), -1)[:, :5] / 255

    return compute, calls


def test_cache_hits_corrupt_entries_and_key(tmp_path):
    cache = EmbeddingCache(tmp_path)
    imgs = np.random.default_rng(0).integers(0, 255, (6, 8, 8), dtype=np.uint8)
    compute, calls = compute_counter()
    key, what = encoder_key("x/y", {"weights": "none", "input_size": [8, 8]})
    first = cache.features(key, what, imgs, compute)
    assert calls == [6]
    again = cache.features(key, what, imgs[::-1], compute)
    assert calls == [6] and np.array_equal(again, first[::-1])
    # a damaged entry (one byte flipped) is recomputed, never used
    path = cache.entry_path(key, image_hashes(imgs[2:3])[0])
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    cache.entry_path(key, image_hashes(imgs[4:5])[0]).write_bytes(b"BBE1")  # truncated
    from benchbox.execute.embeddings import CacheStats

    stats = CacheStats()
    third = cache.features(key, what, imgs, compute, stats)
    assert calls == [6, 2] and stats.corrupt == 2 and np.array_equal(third, first)
    assert cache.read(key, image_hashes(imgs[2:3])[0]) is not False  # rewritten
    # another weights file or input size is another encoder
    assert encoder_key("x/y", {"weights": "none", "input_size": [9, 8]})[0] != key
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"a")
    k1 = encoder_key("x/y", {"weights": str(weights)})
    weights.write_bytes(b"b")
    from benchbox.execute import embeddings

    embeddings._FILE_HASHES.clear()
    assert encoder_key("x/y", {"weights": str(weights)})[0] != k1[0] and k1[1]["weights"].startswith("sha256:")


def test_size_limit_evicts_oldest(tmp_path):
    cache = EmbeddingCache(tmp_path, limit=3 * (24 + 20))  # three 5-float entries
    compute, _ = compute_counter()
    imgs = np.random.default_rng(0).integers(0, 255, (8, 8, 8), dtype=np.uint8)
    key, what = encoder_key("x/y", {})
    for i in range(8):
        cache.features(key, what, imgs[i : i + 1], compute)
    assert sum(s for _, s, _ in cache.entries()) <= 3 * 44
    assert parse_size("2GB") == 2 * 10**9 and parse_size("1 MiB") == 2**20
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")


@pytest.mark.slow  # a whole run (~20 s on a loaded 2-core machine)
def test_read_only_cache_warns_and_goes_on(tmp_path, reg, monkeypatch):
    """A cache folder that cannot be written (here a file in its way, which stops root too; read-only and
    full disks raise the same OSError): one warning, every fold finishes, features computed."""
    (tmp_path / "blocked").write_text("a file where the cache folder would go")
    monkeypatch.setenv("BENCHBOX_CACHE", str(tmp_path / "blocked" / "cache"))
    messages = []

    class Rep:
        def __getattr__(self, name):
            return lambda *a, **k: messages.append(a[0]) if name == "message" else None

    result = run_suite(load_suite(suite_file(tmp_path, entry("lp", "linear-probe")), reg), reg, reporter=Rep())
    assert result.summary["folds"].iloc[0] == 3  # every fold finished
    assert any("embedding cache off" in m and "BENCHBOX_CACHE" in m for m in messages)


# --- runs -----------------------------------------------------------------------------------------------
@pytest.mark.slow  # two whole runs
def test_schemes_run_record_and_rank_apart(tmp_path, reg, cache_dir):
    body = entry("ft") + entry("lp", "linear-probe") + entry("knn", "knn", "k = 5")
    Thumbs.embedded = 0
    result = run_suite(load_suite(suite_file(tmp_path, body), reg), reg)
    schemes = dict(zip(result.summary["backbone"], result.summary["scheme"]))
    assert schemes == {"ft": "fine-tune", "lp": "linear-probe", "knn": "knn"}
    store = RunStore(result.run_dir)
    records = {r.cell.backbone: r for r in store.read_records()[0] if r.fold == 0}
    assert records["lp"].info["scheme"] == "linear-probe" and records["ft"].info["scheme"] == "fine-tune"
    assert records["knn"].info["embedding_cache"]["computed"] == 0  # the probe's folds embedded them all
    cells = {c["backbone"]: c for c in store.manifest()["cells"]}
    assert cells["knn"]["scheme"] == "knn" and cells["knn"]["options"]["k"] == 5
    entries, metrics, _ = collect([result.run_dir], reg)
    groups = dict(zip(entries["backbone"], entries["group"]))
    assert len(set(groups.values())) == 3 and groups["lp"].endswith("| scheme linear-probe")
    report = (result.run_dir / "report.md").read_text()
    assert "| Scheme" in report and "linear-probe" in report
    # the encoder was timed in the first fold of the first entry, and its time kept
    timing = [r.info["timing"]["encoder_timing"] for r in store.read_records()[0] if r.cell.backbone != "ft"]
    assert timing.count("timed in this fold") == 1 and sum(t.startswith("kept from") for t in timing) == 5
    # a second suite over the same images and encoder: nothing is embedded again, not even to time it
    before = Thumbs.embedded
    again = run_suite(load_suite(suite_file(tmp_path, entry("other", "knn", "k = 3"), name="t.toml"), reg), reg)
    recs = [r for r in RunStore(again.run_dir).read_records()[0]]
    assert all(r.info["embedding_cache"]["computed"] == 0 for r in recs)
    assert all(r.info["embedding_cache_test"]["computed"] == 0 for r in recs)
    assert Thumbs.embedded == before
    assert all(r.infer_images_per_sec > 0 for r in recs)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch not installed (pip install 'benchbox[torch]')")
def test_cli_timm_three_schemes_then_a_second_suite_embeds_nothing(tmp_path):
    backbones = ""
    for alias, scheme in (("ft", "fine-tune"), ("lp", "linear-probe"), ("kn", "knn")):
        backbones += f'[backbones.{alias}]\nplugin = "timm/resnet18"\nweights = "none"\ninput_size = [48, 48]\n'
        backbones += f'scheme = "{scheme}"\n' + ("k = 5\n" if scheme == "knn" else "")
    path = suite_file(tmp_path, backbones)
    # one thread in both runs: the encoder's kept inference time is per thread count (--threads auto follows the load)
    env = {"BENCHBOX_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    out = run_cli("run", path, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "linear-probe" in out.stdout and "knn" in out.stdout
    info = run_cli("cache", "info", env=env)
    assert info.returncode == 0 and "timm/resnet18" in info.stdout and "36" in info.stdout, info.stdout
    # another suite, same images and encoder: the torch encoder's forward passes, counted in-process
    script = tmp_path / "count.py"
    script.write_text(
        "import sys\nfrom benchbox.define.suite import load_suite\nfrom benchbox.execute.runner import run_suite\n"
        "from benchbox.plugins import load_registry\nfrom benchbox_torch import embed\n"
        "reg = load_registry()\nr = run_suite(load_suite(sys.argv[1], reg), reg)\n"
        "print('FORWARD_PASSES', embed.EMBEDDED_IMAGES)\n"
    )
    second = write_suite(
        tmp_path / "second.toml",
        SUITE.format(
            out=tmp_path / "runs2",
            top="",
            backbones='[backbones.again]\nplugin = "timm/resnet18"\nweights = "none"\ninput_size = [48, 48]\n'
            'scheme = "linear-probe"\n',
        ),
    )
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, str(script), str(second)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "FORWARD_PASSES 0" in done.stdout, done.stdout  # features and the encoder's timing: all kept
    cleared = run_cli("cache", "clear", env=env)
    assert cleared.returncode == 0 and "removed 1 encoder" in cleared.stdout, cleared.stdout


def test_image_hashes_are_each_images_own_for_strided_views_too():
    """A view hashes as its copy; equal pixels hash equally; the shape is part of the content."""
    from benchbox.execute.embeddings import image_hashes

    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (12, 20, 24, 3), dtype=np.uint8)
    images[7] = images[10]
    hashes = image_hashes(images)
    assert hashes[7] == hashes[10] and len(set(hashes)) == 11
    strided = images[:, :, ::2]
    assert image_hashes(strided) == image_hashes(np.ascontiguousarray(strided))
    assert image_hashes(images[:1, ..., 0]) != image_hashes(images[:1, ..., :1])
