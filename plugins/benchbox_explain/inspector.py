"""The ``explain`` fold inspector: Grad-CAM maps of each fold's own model, turned on by a suite's [explain].

At validate (before anything trains) it refuses what would only be found fold after fold: a backbone that
cannot draw maps (no ``explain()``, or a frozen-features scheme) and an explicit ``layer`` that is not a
feature map of the network (looked up in a network built with random weights, ``Backbone.feature_maps``;
"auto" needs no build, and a name an earlier build listed is accepted from the user cache). While a run trains it explains a seeded sample of each fold's test images; a
backbone that fails to explain gets a warning and no maps, never a failed fold.
"""

from __future__ import annotations

import difflib
import time
import traceback
from collections.abc import Mapping
from typing import Any

import numpy as np

from benchbox.contracts import Backbone, FinishedFold, FoldArtefacts, FoldInspector, SuiteBackbone
from benchbox.execute import memo
from benchbox_explain.maps import (
    EXPLAIN_DEFAULTS,
    FOLDER,
    check_maps,
    check_settings,
    explain_layer,
    select,
    thumbnails,
)

#: the scheme that trains a network end to end (benchbox/execute/schemes.py); the others classify frozen features
FINE_TUNE = "fine-tune"


class GradCam(FoldInspector):
    name = "explain"
    description = "Grad-CAM maps of a seeded sample of each fold's test images, by the fold's own model ([explain])"
    defaults = EXPLAIN_DEFAULTS
    option_types = {"layer": (str, dict)}  # one name for every backbone, or { ALIAS = "name" } per backbone
    folder = FOLDER

    def settings(self, table: Mapping[str, Any], seed: int) -> dict:
        return {**EXPLAIN_DEFAULTS, "seed": seed, **dict(table)}  # the suite's seed unless the table names one

    def check_options(self, options):
        return check_settings(dict(options))

    def check_backbones(self, options, backbones: Mapping[str, SuiteBackbone | None], networks: bool) -> list[str]:
        problems = []
        layers = options.get("layer", "auto")
        valid = [alias for alias, entry in backbones.items() if entry is not None]
        if isinstance(layers, dict):  # per backbone: its aliases, each a layer name
            for alias, layer in layers.items():
                if alias not in backbones:
                    problems.append(
                        f"explain.layer.{alias}: not a backbone of this suite; use a name from [backbones.*]: "
                        f"{', '.join(valid) or 'none'}"
                    )
                elif not isinstance(layer, str) or not layer.strip():
                    problems.append(f'explain.layer.{alias}: must be "auto" or a layer/module name of that backbone')
        built: dict = {}
        for alias, entry in backbones.items():
            if entry is None or not _available(entry.backbone):
                continue  # reported already, or unavailable here (`benchbox run` says so with the install command)
            problem = _explainable(entry)
            if problem:
                problems.append(problem)
                continue
            layer = explain_layer(options, alias)
            key = f"explain.layer.{alias}" if isinstance(layers, dict) else "explain.layer"
            if networks and layer != "auto" and layer.strip():
                problem = _layer_problem(entry, layer, key, built)
                if problem:
                    problems.append(problem)
        return problems

    def inspect(self, fold: FinishedFold, options: Mapping[str, Any]) -> FoldArtefacts:
        """Maps of a seeded sample of the test fold (``select``), by the fold's own model, for the predicted
        class. A backbone that cannot explain, or whose maps break the contract, gets a ``status`` saying
        why, a warning, and no maps."""
        job, probs = fold.job, fold.probabilities
        layer = explain_layer(options, fold.alias)
        predicted = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
        ids = list(job.test_ids) if job.test_ids is not None else [str(i) for i in range(len(job.x_test))]
        idx = select(fold.y_test, predicted, ids, options["images_per_class"], options["seed"], job.num_classes)
        summary = {"layer": layer, "images": 0}

        def without_maps(status: str, log: str | None = None) -> FoldArtefacts:
            return FoldArtefacts({**summary, "status": status}, warning=f"no Grad-CAM maps: {status}", log=log)

        if not len(idx):
            return without_maps("no test images to explain")
        t0 = time.perf_counter()
        try:
            maps = fold.backbone.explain(fold.model, job.x_test[idx], predicted[idx], layer=layer)
            maps = check_maps(maps, len(idx), fold.plugin)
        except NotImplementedError as exc:
            return without_maps(f"cannot explain: {exc or 'explain() is not implemented'}")
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            status = f"explain failed on {fold.where}: {type(exc).__name__}: {exc}"
            return without_maps(status, log=f"{status}\n{traceback.format_exc()[-4000:]}")
        y = np.asarray(fold.y_test)
        return FoldArtefacts(
            summary={
                **summary,
                "status": "ok",
                "images": len(idx),
                "map_size": list(maps.shape[1:]),
                "seconds": round(time.perf_counter() - t0, 3),
            },
            arrays={  # the run store writes them to explanations/<cell>__foldNN.npz (maps.load_npz reads them)
                "maps": maps,
                "ids": np.array([str(ids[i]) for i in idx]),
                "index": idx,
                "y_true": y[idx].astype(np.int64),
                "predicted": predicted[idx].astype(np.int64),
                "probability": probs[idx, predicted[idx]].astype(np.float32),
                "images": thumbnails(job.x_test[idx]),
                "input_size": np.array(job.x_test.shape[1:3], dtype=np.int64),
                "layer": np.array(str(layer)),
                "classes": np.array([str(c) for c in fold.classes]),
            },
        )


def _available(backbone: Backbone) -> bool:
    try:
        return bool(backbone.availability().ok)
    except Exception:  # a plugin's own check must not break validation
        return False


def _explainable(entry: SuiteBackbone) -> str | None:
    """Why the backbone's folds can draw no maps at all, in words a user can act on; None when they can."""
    if type(entry.backbone).explain is Backbone.explain:  # the contract's default: not implemented
        return (
            f"backbones.{entry.alias}: {entry.plugin} cannot draw Grad-CAM maps (its plugin has no explain()), which "
            "[explain] asks for; remove [explain] or this backbone, or run them in two suites"
        )
    scheme = str(entry.options.get("scheme", FINE_TUNE))
    if scheme != FINE_TUNE:
        return (
            f"backbones.{entry.alias}.scheme: {scheme!r} classifies frozen features with scikit-learn, so it draws no "
            f'Grad-CAM maps, which [explain] asks for (they need a network trained end to end, scheme = "{FINE_TUNE}"); '
            "remove [explain] or this backbone, or run them in two suites"
        )
    return None


def _layer_problem(entry: SuiteBackbone, layer: str, key: str, built: dict) -> str | None:
    """Whether ``layer`` is a feature map of the network the entry builds (its options, random weights); one
    build per plugin and options. None when it is, or when the plugin cannot list its layers.

    A listing found before for the same plugin, options and framework versions (``remembered``) accepts a
    name without building (building means importing the framework: seconds); a name it lacks is looked up
    in a fresh build before it is refused, so a stale listing can never refuse a suite."""
    cache_key = (entry.plugin, repr(sorted(entry.options.items(), key=lambda kv: kv[0])))
    if cache_key not in built and layer in [name for name, _ in remembered(entry) or []]:
        return None
    if cache_key not in built:
        try:
            built[cache_key] = [
                (str(n), (int(h), int(w))) for n, (h, w) in entry.backbone.feature_maps(_unweighted(entry))
            ]
            remember(entry, built[cache_key])
        except NotImplementedError:
            built[cache_key] = None  # cannot be checked before training: the fold says so if the name is wrong
        except Exception as exc:
            built[cache_key] = f"{type(exc).__name__}: {exc}"
    maps = built[cache_key]
    if maps is None:
        return None
    if isinstance(maps, str):
        return f"{key}: could not build {entry.plugin} (backbone {entry.alias}) to look up layer {layer!r}: {maps}"
    names = [str(name) for name, _ in maps]
    if layer in names:
        return None
    h, w = (int(v) for v in entry.options.get("input_size", (0, 0)))
    close = difflib.get_close_matches(layer, names, n=3, cutoff=0.6)
    guess = f"did you mean {', '.join(close)}? " if close else ""
    return (
        f"{key}: {layer!r} is not a feature map of {entry.plugin} (backbone {entry.alias}); {guess}"
        f"its {len(names)} feature maps at {h}x{w}, by size: {by_size(maps)}; `benchbox backbones describe "
        f"{entry.plugin} --input {h}x{w} --layers` lists every name"
    )


def _unweighted(entry: SuiteBackbone) -> dict:
    return {**entry.options, "weights": "none"}


def _listing_about(entry: SuiteBackbone) -> dict:
    return {"plugin": entry.plugin, "options": _unweighted(entry)}


def remembered(entry: SuiteBackbone) -> list | None:
    """The feature maps listed by an earlier build of the same network (benchbox/execute/memo.py), or None."""
    known = memo.recall("feature-maps", _listing_about(entry))
    try:
        return None if known is None else [(str(name), tuple(size)) for name, size in known]
    except (TypeError, ValueError):  # not a listing: as if none were kept
        return None


def remember(entry: SuiteBackbone, maps: list) -> None:
    memo.keep("feature-maps", _listing_about(entry), [[n, list(size)] for n, size in maps])


def by_size(maps: list) -> str:
    """The feature maps grouped by resolution, in network order: "32x40: 12 (conv1 ... block_2_add)", so a
    user picks a map by how fine it is (docs/validity.md, 'Choosing the layer')."""
    groups: list[tuple[tuple[int, int], list[str]]] = []
    for name, size in maps:
        size = tuple(int(v) for v in size)
        if groups and groups[-1][0] == size:
            groups[-1][1].append(str(name))
        else:
            groups.append((size, [str(name)]))
    parts = []
    for (h, w), names in groups:
        span = names[0] if len(names) == 1 else f"{names[0]} ... {names[-1]}"
        parts.append(f"{h}x{w}: {len(names)} ({span})")
    return ", ".join(parts)
