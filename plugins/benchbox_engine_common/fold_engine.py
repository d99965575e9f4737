"""One engine skeleton: the fold lifecycle every framework follows, written once.

A fold: pick the runtime (device, precision) -> take the cell's model from the model cache (built
once, then reset to the state a fresh build with the fold's seed has) or, with
``BENCHBOX_REBUILD_EACH_FOLD=1``, build it afresh -> compute the frozen prefix's activations (or say
why not) -> train -> predict (the test fold from its cached activations, anything else through the
whole network) -> describe and bench. A framework subclasses ``FoldEngine`` and writes only the
steps marked "framework step": how to build, reset, cache, train and predict with its own library.

Nothing here imports a framework; ``target`` is what the framework builds from (a network name, a
network spec) and is passed through untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from benchbox.contracts import FoldJob, Steps
from benchbox.errors import BenchboxError
from benchbox_engine_common.prefix_cache import job_ids


def rebuild_each_fold() -> bool:
    """BENCHBOX_REBUILD_EACH_FOLD=1: build every fold's model afresh (the old way; benchmarks/fold_overhead.py)."""
    return os.environ.get("BENCHBOX_REBUILD_EACH_FOLD", "").strip().lower() in ("1", "true", "yes")


def options_fingerprint(options: Mapping[str, Any], weights_kind: Callable[[str], str]) -> tuple:
    """(options as text, (mtime, size) of a weights file or None): what of the options decides a
    built model, for the model cache's key."""
    weights = options.get("weights")
    stamp = None
    if isinstance(weights, str) and weights_kind(weights) == "file":
        path = os.path.expanduser(weights)
        stamp = (os.path.getmtime(path), os.path.getsize(path)) if os.path.exists(path) else None
    return json.dumps(dict(options), sort_keys=True, default=repr), stamp


class ModelCache:
    """At most ``size`` built models, least recently used dropped first (before a new one is built,
    so two never share the memory needlessly). The fold's seed is not in the key: a kept model is
    reset to the state a fresh build with the fold's seed has; a reset that fails builds afresh."""

    def __init__(self, size: int = 2):
        self.size = size
        self._models: OrderedDict[tuple, Any] = OrderedDict()
        self.builds = 0
        self.reuses = 0

    def fetch(self, key: tuple, build: Callable[[], Any], reset: Callable[[Any], bool]) -> tuple[Any, bool]:
        """(the model in its fold's fresh state, whether an earlier build was reused)."""
        built = self._models.get(key)
        if built is not None and reset(built):
            self._models.move_to_end(key)
            self.reuses += 1
            return built, True
        self._models.pop(key, None)
        while self._models and len(self._models) >= self.size:
            self._models.popitem(last=False)
        built = build()
        self._models[key] = built
        self.builds += 1
        return built, False

    def clear(self) -> None:
        self._models.clear()


@dataclass
class FoldInputs:
    """What trains on a fold and on what: the suffix on cached prefix activations (``test`` the test
    fold's activations), or the whole network on the images (``test`` None)."""

    trainer: Any
    train: Any
    test: Any = None
    info: dict = field(default_factory=dict)


@dataclass
class TrainedModel:
    """A fold's trained network, and the cached prefix activations of its test fold (if any)."""

    net: Any  # the whole network, input -> probabilities, as deployed
    trainer: Any  # the suffix that trained on cached activations, or None
    test_ids: list[str]
    test_inputs: Any  # the test fold's cached activations, or None
    batch_size: int
    info: dict = field(default_factory=dict)
    rt: Any = None  # the framework's Runtime: ``info()`` and ``scope()``
    built: Any = None  # the reused model this fold trained, None when built for the fold alone
    generation: int = 0  # which fold's training of ``built`` this is

    def scope(self):
        return self.rt.scope() if self.rt is not None else contextlib.nullcontext()


class FoldEngine:
    """The fold lifecycle; subclasses write the framework steps. A built model (the framework's
    own object) has ``info`` (what a build reports) and ``generation`` (folds trained so far)."""

    name = ""  # "keras", "torch": starts messages

    # --- framework steps --------------------------------------------------------------------
    def models(self) -> ModelCache:
        """The process's model cache (looked up per call, so a test can swap it)."""
        raise NotImplementedError

    def runtime(self, target, job: FoldJob):
        """The fold's Runtime (device, precision): has ``info()`` and ``scope()``."""
        raise NotImplementedError

    def cache_key(self, target, job: FoldJob, rt) -> tuple:
        """Everything that decides the built model, the fold's seed excepted."""
        raise NotImplementedError

    def build(self, target, job: FoldJob, rt):
        """A fresh build with the fold's seed."""
        raise NotImplementedError

    def reset(self, built, target, job: FoldJob, rt) -> bool:
        """Put a kept model in the state ``build`` would give; False when it cannot (build afresh)."""
        raise NotImplementedError

    def cached_inputs(self, target, built, job: FoldJob, rt) -> FoldInputs | str:
        """The suffix and the cached prefix activations, or why the prefix cache is off."""
        raise NotImplementedError

    def whole_inputs(self, built, job: FoldJob) -> FoldInputs:
        """The whole network and the fold's training images as it takes them."""
        raise NotImplementedError

    def train(self, trainer, inputs, job: FoldJob, rt) -> dict:
        """Train on the fold; return the timings (``train_loop_seconds``, ...)."""
        raise NotImplementedError

    def whole_net(self, built):
        """The built model's whole network (input -> probabilities)."""
        raise NotImplementedError

    def predict(self, model: TrainedModel, images, cached: bool) -> tuple[Any, dict]:
        """(probabilities as float64, timings) of the test fold's cached activations (``cached``)
        or of ``images`` through the whole network."""
        raise NotImplementedError

    def network_facts(self, target, options) -> dict:
        """What `benchbox backbones describe` shows between the framework and the head."""
        raise NotImplementedError

    def gpu_problem(self) -> str | None:
        """Why ``--device cuda`` cannot run (the framework sees no GPU), or None."""
        raise NotImplementedError

    def bench_model(self, target, options, batch_size: int, device: str, amp: bool, channels_last: bool, train: bool):
        """(step, sync, parameter count, GMACs) of one training or inference step on random inputs."""
        raise NotImplementedError

    # --- the lifecycle, written once --------------------------------------------------------
    def fit(self, target, job: FoldJob) -> TrainedModel:
        rt = self.runtime(target, job)
        t0 = time.perf_counter()
        with rt.scope():
            if rebuild_each_fold():
                built, reused, kept = self.build(target, job, rt), False, None
            else:
                built, reused = self.models().fetch(
                    self.cache_key(target, job, rt),
                    lambda: self.build(target, job, rt),
                    lambda kept: self.reset(kept, target, job, rt),
                )
                built.generation += 1
                kept = built
            info = {**built.info, **rt.info(), "model": "reused" if reused else "built"}
            info["build_seconds"] = time.perf_counter() - t0
            inputs = self.cached_inputs(target, built, job, rt)
            if isinstance(inputs, str):
                info["prefix_cache"] = f"off: {inputs}"
                inputs = self.whole_inputs(built, job)
            info.update(inputs.info)
            info.update(self.train(inputs.trainer, inputs.train, job, rt))
        cached = inputs.test is not None
        return TrainedModel(
            self.whole_net(built),
            inputs.trainer if cached else None,
            job_ids(job)[1],
            inputs.test,
            job.training.batch_size,
            info,
            rt,
            kept,
            kept.generation if kept is not None else 0,
        )

    def check_current(self, model: TrainedModel) -> None:
        """A fold's model is reset when the next fold of its cell trains: using it after that is an error."""
        if model.built is not None and model.built.generation != model.generation:
            raise BenchboxError(
                f"{self.name}: this fold's model was reset for a later fold of the same cell (one model per cell, "
                "reset per fold); use a fold's model before the next fold trains, or set "
                "BENCHBOX_REBUILD_EACH_FOLD=1 to keep each fold's model"
            )

    def predict_images(self, model: TrainedModel, images, ids=None):
        """The test fold from its cached prefix activations; anything else through the whole
        network, as deployed. The test fold's prediction timings go in ``model.info``."""
        self.check_current(model)
        test_fold = ids is not None and list(ids) == model.test_ids
        with model.scope():
            probs, timings = self.predict(model, images, cached=test_fold and model.trainer is not None)
        if test_fold:
            model.info.update(timings)
        return probs

    def describe(self, target, options) -> dict:
        return {
            "framework": self.name,
            **self.network_facts(target, options),
            "head": list(options["head"]),
            "pooling": options["pooling"],
            "weights": options["weights"],
        }

    def bench_steps(self, target, options, batch_size, device, amp, channels_last, train) -> dict:
        """Steps for ``benchbox bench`` (the Backbone contract's ``bench_steps``) on random inputs,
        random weights."""
        problem = self.gpu_problem() if device == "cuda" else None
        if problem:
            raise BenchboxError(problem)
        step, sync, params, gmacs = self.bench_model(
            target, {**options, "weights": "none"}, batch_size, device, amp, channels_last, train
        )
        return {"steps": Steps(step=step, sync=sync), "params": params, "gmacs": gmacs}
