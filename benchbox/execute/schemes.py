"""Schemes: how a backbone entry learns from a fold.

- ``fine-tune`` (the default): the backbone's own ``fit``/``predict`` (train the network, as ever);
- ``linear-probe``: the frozen, pretrained encoder's pooled features (``Backbone.embed``), standardised,
  into an L2-regularised logistic regression whose C is chosen by an inner cross-validation on the
  training fold only (patient-grouped and stratified where the fold's groups allow; log-loss);
- ``knn``: the same features, k nearest training images by cosine distance (``k``, default 11), the
  class shares of the k as probabilities.

The probe (benchbox/execute/probe.py: GridSearchCV's estimator, computed in the training rows' span) and
the kNN give scikit-learn models; the features come through the embedding cache
(benchbox/execute/embeddings.py), so each image goes through each encoder once, across folds, runs
and suites, and so does the timing of the encoder's inference (``network_seconds``). Everything else —
folds, metrics, intervals, probes, external sets, the cross-dataset matrix, the harness's clock — is the
same as for fine-tuning: a frozen scheme is a Backbone wrapping the entry's backbone, handed to the
harness (benchbox/execute/harness.py). Framework-free.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchbox.contracts import Backbone, FoldJob
from benchbox.errors import BenchboxError
from benchbox.execute.probe import fit_linear_probe

FINE_TUNE = "fine-tune"
SCHEMES = {
    FINE_TUNE: "train the network on each fold (the backbone's own fit)",
    "linear-probe": "frozen encoder; L2 logistic regression on pooled features, C by inner CV on the training fold",
    "knn": "frozen encoder; k nearest training images by cosine distance on pooled features",
}
FROZEN = ("linear-probe", "knn")
DEFAULT_K = 11
#: keys of a [backbones.NAME] table that belong to the scheme, not to the backbone plugin
SCHEME_KEYS = {"scheme": str, "k": int}


def scheme_of(options: Mapping[str, Any]) -> str:
    return str(options.get("scheme", FINE_TUNE))


def can_embed(backbone: Backbone) -> bool:
    """Whether the backbone implements ``embed`` (frozen features), which the frozen schemes need."""
    return type(backbone).embed is not Backbone.embed


def option_problems(options: Mapping[str, Any], backbone: Backbone | None, plugin: str) -> list[str]:
    """Problems with an entry's scheme keys, each ``"key: message"`` (the suite prefixes backbones.NAME.)."""
    from benchbox.errors import did_you_mean

    scheme = options.get("scheme", FINE_TUNE)
    if not isinstance(scheme, str):
        return []  # its type is reported by the suite's type check
    if scheme not in SCHEMES:
        return [f"scheme: unknown scheme {scheme!r}{did_you_mean(scheme, SCHEMES)}; allowed: {', '.join(SCHEMES)}"]
    problems = []
    k = options.get("k")
    if k is not None and scheme != "knn":
        problems.append(f'k: applies to scheme = "knn" only (this entry\'s scheme is {scheme!r}); remove it')
    elif isinstance(k, int) and not isinstance(k, bool) and k < 1:
        problems.append(f"k: must be at least 1, got {k}")
    if scheme in FROZEN and backbone is not None and not can_embed(backbone):
        problems.append(
            f"scheme: {scheme!r} needs frozen features, but backbone plugin {plugin} cannot embed (it has no "
            'embed()); use scheme = "fine-tune", or a backbone that embeds (torch/, timm/, txv/, keras/, hf/, open_clip/)'
        )
    return problems


def smallest_training_fold(folds: np.ndarray) -> int:
    """Images in the smallest training fold (samples of every other fold, and the train-only ones)."""
    folds = np.asarray(folds)
    ks = sorted(set(folds[folds >= 0].tolist()))
    return min((int((folds != f).sum()) for f in ks), default=int(len(folds)))


def knn_fold_problem(options: Mapping[str, Any], folds: np.ndarray, dataset: str) -> str | None:
    """``k`` larger than the smallest training fold of ``dataset``: "k: message"; None when it fits."""
    if scheme_of(options) != "knn":
        return None
    k = int(options.get("k", DEFAULT_K))
    smallest = smallest_training_fold(folds)
    if k > smallest:
        return (
            f"k: k = {k} is larger than the smallest training fold of data set {dataset!r} ({smallest} images); "
            f"choose k <= {smallest}"
        )
    return None


def embed_identity(backbone: Backbone, options: Mapping[str, Any]) -> dict:
    """What decides the backbone's features: its ``embed_identity`` where it has one, else every option but
    the scheme's."""
    own = getattr(backbone, "embed_identity", None)
    identity = dict(own(options)) if callable(own) else dict(options)
    return {k: v for k, v in identity.items() if k not in SCHEME_KEYS}


def timing_where(images: np.ndarray, training) -> dict:
    """What an encoder's inference time depends on besides the encoder: the machine, the batch's shape,
    the device and precision, and the threads (``--threads`` sets OMP_NUM_THREADS; unset, the frameworks
    use every core this process may use)."""
    import platform

    from benchbox.execute.environment import affinity_cores

    cores = affinity_cores()
    threads = os.environ.get("OMP_NUM_THREADS", "").strip()
    return {
        "host": platform.node(),
        "cores": cores,
        "threads": int(threads) if threads.isdigit() else cores,
        "batch_shape": list(np.shape(images)),
        "batch_size": int(getattr(training, "batch_size", 0)),
        "device": str(getattr(training, "device", "auto")),
        "precision": str(getattr(training, "precision", "fp32")),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


_CACHE = None


def default_cache():
    """One embedding cache per process, at the current cache root (tests move it with BENCHBOX_CACHE)."""
    global _CACHE
    from benchbox.execute.embeddings import EmbeddingCache, embeddings_dir

    if _CACHE is None or _CACHE.root != embeddings_dir():
        _CACHE = EmbeddingCache()
    return _CACHE


@dataclass
class SchemeModel:
    classifier: Any
    classes: np.ndarray  # the class indices the classifier knows (a fold may lack one)
    num_classes: int
    training: Any
    info: dict = field(default_factory=dict)


class FrozenScheme(Backbone):
    """A backbone entry under a frozen scheme: features through the cache, then scikit-learn."""

    def __init__(self, backbone: Backbone, plugin: str, options: Mapping[str, Any], cache=None):
        self.backbone, self.plugin, self.options = backbone, plugin, dict(options)
        self.scheme = scheme_of(options)
        self.name = f"{plugin} [{self.scheme}]"
        self.framework = backbone.framework
        self.accepted_channels = tuple(getattr(backbone, "accepted_channels", (1, 3)))
        self.cache = cache if cache is not None else default_cache()
        self.key, self.what = None, None

    def _key(self):
        if self.key is None:
            from benchbox.execute.embeddings import encoder_key

            self.key, self.what = encoder_key(self.plugin, embed_identity(self.backbone, self.options))
        return self.key, self.what

    def features(self, images: np.ndarray, training, stats) -> np.ndarray:
        key, what = self._key()

        def compute(batch):
            return self.backbone.embed(batch, self.options, training)

        feats = self.cache.features(key, what, images, compute, stats)
        if not np.isfinite(feats).all():
            raise BenchboxError(
                f"{self.plugin}: embed() returned non-finite features (NaN or inf); check the weights and the input"
            )
        return feats

    def fit(self, job: FoldJob) -> SchemeModel:
        from benchbox.execute.embeddings import CacheStats

        stats = CacheStats()
        x = self.features(job.x_train, job.training, stats)
        y = np.asarray(job.y_train, dtype=np.int64)
        t0 = time.perf_counter()
        info: dict = {}
        if self.scheme == "knn":
            classifier = fit_knn(x, y, int(self.options.get("k", DEFAULT_K)))
            info["k"] = int(self.options.get("k", DEFAULT_K))
            info["distance"] = "cosine"
        else:
            classifier, probe_info = fit_linear_probe(x, y, job.train_groups, job.training.class_weight, job.seed)
            info.update(probe_info)
        info["probe_fit_seconds"] = round(time.perf_counter() - t0, 4)
        info = {
            "scheme": self.scheme,
            "encoder": self.plugin,
            "encoder_key": self._key()[0],
            "feature_dim": int(x.shape[1]),
            **info,
            "embedding_cache": stats.as_dict(),
            "params_trainable": trainable_parameters(classifier),
        }
        if self.cache.disabled_reason:
            info["embedding_cache"]["off"] = self.cache.disabled_reason
        return SchemeModel(classifier, np.unique(y), job.num_classes, job.training, info)

    def _probabilities(self, model: SchemeModel, x: np.ndarray) -> np.ndarray:
        out = np.zeros((len(x), model.num_classes))
        if len(x):
            p = model.classifier.predict_proba(x)
            out[:, model.classifier.classes_.astype(np.int64)] = p
        return out

    def predict(self, model: SchemeModel, images: np.ndarray, ids: Sequence[str] | None = None) -> np.ndarray:
        """Features through the cache (the same features the encoder gives: keyed by the pixels)."""
        from benchbox.execute.embeddings import CacheStats

        stats = CacheStats()
        x = self.features(images, model.training, stats)
        if ids is not None:
            model.info["embedding_cache_test"] = stats.as_dict()
        return self._probabilities(model, x)

    def network_seconds(self, model: SchemeModel, images: np.ndarray, clock) -> tuple[float, dict]:
        """Seconds of the whole model as deployed on ``images`` (the encoder on the pixels, then the
        classifier), each part after an untimed warm-up call, the device synchronised before each clock
        read; and where the parts came from. The harness turns it into ``infer_images_per_sec``.

        The encoder's time depends on the network, the batch's shape, the machine, device and threads, not
        on which images (nor fold, nor scheme): it is timed once so and kept beside the encoder's cached
        features (``EmbeddingCache.timing``), so a warm run runs no encoder at all; `benchbox cache clear
        --timings` times them again. The classifier (a matrix product, or the k nearest of the training
        fold) is timed every fold."""
        key, what = self._key()
        training = model.training
        where = timing_where(images, training)
        kept = self.cache.timing(key, where)
        feats = None
        if kept is None:
            self.backbone.embed(images, self.options, training)  # warm-up: building, tracing, allocation
            self.backbone.synchronize(None)
            t0 = clock()
            feats = np.asarray(self.backbone.embed(images, self.options, training), dtype=np.float32)
            self.backbone.synchronize(None)
            encoder_seconds = clock() - t0
            self.cache.store_timing(key, what, where, encoder_seconds)
            source = "timed in this fold"
        else:
            encoder_seconds = float(kept["seconds"])
            source = f"kept from {kept.get('measured', 'an earlier run')} (embedding cache)"
        if feats is None:
            from benchbox.execute.embeddings import CacheStats

            feats = self.features(images, training, CacheStats())  # the test fold's: cache hits
        self._probabilities(model, feats)  # warm-up
        t0 = clock()
        self._probabilities(model, feats)
        classifier_seconds = clock() - t0
        parts = {
            "encoder_seconds": round(encoder_seconds, 6),
            "classifier_seconds": round(classifier_seconds, 6),
            "encoder_timing": source,
        }
        return encoder_seconds + classifier_seconds, parts

    def synchronize(self, model) -> None:
        self.backbone.synchronize(None)

    def info(self, model: SchemeModel) -> dict:
        return dict(model.info)

    def explain(self, model, images, target_classes, layer="auto"):
        raise NotImplementedError(
            f"scheme {self.scheme!r} classifies frozen features with scikit-learn; Grad-CAM needs a network "
            'trained end to end (scheme = "fine-tune")'
        )


def for_scheme(backbone: Backbone, plugin: str, options: Mapping[str, Any]) -> Backbone:
    """The backbone the harness runs for an entry: itself for fine-tuning, a FrozenScheme otherwise."""
    scheme = scheme_of(options)
    if scheme == FINE_TUNE:
        return backbone
    problems = option_problems(options, backbone, plugin)
    if problems:
        raise BenchboxError(f"{plugin}: " + "; ".join(problems))
    return FrozenScheme(backbone, plugin, options)


# --- scikit-learn -----------------------------------------------------------------------------------
def trainable_parameters(classifier) -> int:
    est = getattr(classifier, "steps", [[None, classifier]])[-1][1]
    coef = getattr(est, "coef_", None)
    if coef is None:
        return 0
    return int(np.size(coef) + np.size(getattr(est, "intercept_", 0)))


def fit_knn(x: np.ndarray, y: np.ndarray, k: int):
    from sklearn.neighbors import KNeighborsClassifier

    if k > len(x):
        raise BenchboxError(f"k: k = {k} is larger than the training fold ({len(x)} images); choose k <= {len(x)}")
    return KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(x, y)
