"""(c) pytest-benchmark micro-benchmarks (not part of the test suite):

    python -m pytest benchmarks/micro_bench.py --benchmark-only

metrics on 100,000 predictions, fold assignment, and the decode cache (miss vs hit)."""

import numpy as np
from PIL import Image

from benchbox.data.images import DecodeCache
from benchbox_paper_metrics.metrics import paper_metrics
from benchbox_splits import kfold

RNG = np.random.default_rng(0)
Y_TRUE = RNG.integers(0, 3, 100_000)
Y_PRED = np.where(RNG.random(100_000) < 0.9, Y_TRUE, RNG.integers(0, 3, 100_000))
FOLDS = np.arange(100_000) % 10
GROUPS = RNG.integers(0, 3_000, 10_000)
LABELS = GROUPS % 3


def test_paper_metrics_100k(benchmark):
    m = benchmark(paper_metrics, Y_TRUE, Y_PRED, ["covid", "pneumonia", "normal"], "covid", FOLDS)
    assert m["n"] == 100_000


def test_grouped_stratified_10fold_10k(benchmark):
    folds = benchmark(kfold, 10, True, True, LABELS, GROUPS, 0)
    assert set(folds) == set(range(10))


def _image(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(RNG.integers(0, 255, (320, 280), dtype=np.uint8)).save(path)
    return path


def test_decode_miss(benchmark, tmp_path):
    path = _image(tmp_path)
    benchmark(lambda: DecodeCache().get(path, (200, 266)))


def test_decode_hit(benchmark, tmp_path):
    path = _image(tmp_path)
    cache = DecodeCache()
    cache.get(path, (200, 266))
    benchmark(cache.get, path, (200, 266))
