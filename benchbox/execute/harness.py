"""The harness: trains and predicts one fold through a Backbone plugin, owns the clock, and
checks what the plugin returns before anything is stored.

Every backbone is timed the same way, so comparison tables are fair by construction:
- ``train_seconds``: wall time of ``fit`` (building, any caching the engine does, training),
  device synchronised at the end;
- ``predict_seconds``: wall time of ``predict`` on the test fold (engines may reuse cached work);
- ``infer_images_per_sec``: the whole network (``ids=None``) on one batch of test images, after
  one untimed warm-up call of the same batch, synchronised before each clock read. A frozen scheme
  (benchbox/execute/schemes.py) times its two parts so: the encoder once per machine, batch shape and
  thread settings (kept beside its cached features: a warm run embeds nothing), the classifier every
  fold; the rate is the batch over the sum, and the fold record says where each part came from.

Anything a plugin raises is wrapped in a PluginError that names the plugin, the method and the
fold; the full traceback is kept for the run's log.
"""

from __future__ import annotations

import re
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from benchbox.contracts import Backbone, FinishedFold, FoldArtefacts, FoldJob, InspectRequest
from benchbox.errors import BenchboxError, PluginError

#: rows of a probability matrix must sum to one within this
SUM_TOLERANCE = 1e-3


@dataclass
class FoldOutcome:
    """What the harness measured and collected for one fold (plain values)."""

    probabilities: np.ndarray
    external: dict[str, np.ndarray]
    train_seconds: float
    predict_seconds: float
    infer_images_per_sec: float
    info: dict = field(default_factory=dict)
    #: what each fold inspector keeps, by its name (its summary is in ``info`` too); the store writes the arrays
    artefacts: dict[str, FoldArtefacts] = field(default_factory=dict)


def call_plugin(plugin: str, method: str, where: str, fn: Callable, *args, **kwargs) -> Any:
    """Call into a plugin; anything it raises becomes one PluginError naming plugin, method, place."""
    try:
        return fn(*args, **kwargs)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BenchboxError as exc:
        message = str(exc).removeprefix(f"{plugin}: ")  # the plugin often names itself already
        raise PluginError(f"{plugin} failed in {method} on {where}: {message}", detail=traceback.format_exc()) from exc
    except Exception as exc:
        raise PluginError(
            f"{plugin} failed in {method} on {where}: {type(exc).__name__}: {exc}", detail=traceback.format_exc()
        ) from exc


def check_probabilities(p: Any, n: int, num_classes: int, who: str) -> np.ndarray:
    """The output contract: finite, shape (n, num_classes), values in [0, 1], rows summing to one."""
    try:
        arr = np.asarray(p, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PluginError(f"{who} returned probabilities that are not numbers ({exc})") from None
    if arr.shape != (n, num_classes):
        raise PluginError(
            f"{who} returned probabilities of shape {arr.shape}; expected ({n}, {num_classes}) "
            "(one row per image, one column per class)"
        )
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise PluginError(
            f"{who} returned non-finite probabilities (NaN or inf) in {bad} of {n} rows; "
            "the model diverged or the plugin has a bug (try a lower learning rate)"
        )
    if arr.size and (arr.min() < 0 or arr.max() > 1):
        raise PluginError(
            f"{who} returned probabilities outside [0, 1] (min {arr.min():.4g}, max {arr.max():.4g}); "
            "apply softmax to the network's outputs"
        )
    sums = arr.sum(axis=1)
    if arr.size and np.abs(sums - 1).max() > SUM_TOLERANCE:
        worst = int(np.abs(sums - 1).argmax())
        raise PluginError(
            f"{who} returned probability rows that do not sum to one (row {worst} sums to "
            f"{sums[worst]:.6g}, tolerance {SUM_TOLERANCE}); apply softmax to the network's outputs"
        )
    return arr


CHANNEL_NAMES = {1: "grayscale", 3: "RGB"}


def accepted_channels_problem(backbone: Backbone, plugin: str) -> str | None:
    """What is wrong with the backbone's ``accepted_channels`` declaration; None when it is valid."""
    accepted = getattr(backbone, "accepted_channels", (1, 3))
    if not isinstance(accepted, (tuple, list)) or not accepted or not set(accepted) <= {1, 3}:
        return (
            f"{plugin} declares accepted_channels = {accepted!r}; a backbone takes (1, 3) (both, the default), "
            "(1,) (grayscale only) or (3,) (RGB only): fix the plugin"
        )
    return None


def channels_problem(backbone: Backbone, plugin: str, channels: int, data: str) -> str | None:
    """Why ``backbone`` cannot take images of ``channels`` (1 or 3) from ``data`` (e.g. "data set
    xrays"), in words a user can act on; None when it can (``Backbone.accepted_channels``)."""
    invalid = accepted_channels_problem(backbone, plugin)
    if invalid:
        return invalid
    accepted = tuple(getattr(backbone, "accepted_channels", (1, 3)))
    if channels in accepted:
        return None
    if channels == 3:
        fix = (
            'set color = "gray" in its [datasets.*] table (the folder and csv data sets convert colour to its '
            "luma), or choose a backbone that takes RGB"
        )
    else:
        fix = (
            'set color = "rgb" in its [datasets.*] table (the folder and csv data sets repeat grayscale to 3 '
            "channels), or choose a backbone that takes grayscale"
        )
    return (
        f"{plugin} takes {CHANNEL_NAMES[accepted[0]]} images only (accepted_channels = {tuple(accepted)!r}), "
        f"but {data} is {CHANNEL_NAMES[channels]}: {fix}"
    )


def run_fold(
    backbone: Backbone,
    plugin: str,
    job: FoldJob,
    where: str,
    external: dict[str, np.ndarray] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> FoldOutcome:
    """Train on the job, predict its test fold (and any external images), time it all the same way."""
    from benchbox.execute.schemes import for_scheme

    # a frozen scheme (linear-probe, knn) wraps the entry's backbone: features through the cache, scikit-learn
    backbone = call_plugin(plugin, "embed", where, for_scheme, backbone, plugin, job.options)
    problem = channels_problem(backbone, plugin, job.channels, f"the data set of {where}")
    if problem:  # before fit: no training time is spent on a fold the backbone cannot take
        raise PluginError(problem)
    request = job.inspect
    if request is not None:  # the test labels it holds never reach the backbone
        job = replace(job, inspect=None)
    reported = []
    if job.progress is not None:  # notice whether fit reports its epochs (a numpy plugin has none)
        report = job.progress

        def progress(done: int, total: int) -> None:
            reported.append(done)
            report(done, total)

        job = replace(job, progress=progress)
    t0 = clock()
    model = call_plugin(plugin, "fit", where, backbone.fit, job)
    call_plugin(plugin, "synchronize", where, backbone.synchronize, model)
    train_seconds = clock() - t0
    if job.progress is not None and not reported:  # training is over: show it done, not "epochs 0/N"
        job.progress(job.training.epochs, job.training.epochs)

    n_test = len(job.x_test)
    t0 = clock()
    probs = call_plugin(
        plugin,
        "predict",
        where,
        backbone.predict,
        model,
        job.x_test,
        list(job.test_ids) if job.test_ids is not None else None,
    )
    call_plugin(plugin, "synchronize", where, backbone.synchronize, model)
    predict_seconds = clock() - t0
    probs = check_probabilities(probs, n_test, job.num_classes, f"{plugin} (predict on {where})")
    artefacts = inspect_fold(backbone, plugin, model, job, probs, request, where) if request is not None else {}

    rate = float("nan")
    batch = job.x_test[: max(1, min(n_test, job.training.batch_size))]
    timed_parts: dict = {}
    # the whole network: a frozen scheme times its encoder (once per machine, kept with its features) and
    # its classifier (every fold) itself, the same way: warm-up call, then synchronised clock reads
    network_seconds = getattr(backbone, "network_seconds", None)
    if n_test and network_seconds is not None:
        elapsed, timed_parts = call_plugin(plugin, "predict", where, network_seconds, model, batch, clock)
        rate = len(batch) / elapsed if elapsed > 0 else float("nan")
    elif n_test:
        call_plugin(plugin, "predict", where, backbone.predict, model, batch, None)  # warm-up: tracing, allocation
        call_plugin(plugin, "synchronize", where, backbone.synchronize, model)
        t0 = clock()
        call_plugin(plugin, "predict", where, backbone.predict, model, batch, None)
        call_plugin(plugin, "synchronize", where, backbone.synchronize, model)
        elapsed = clock() - t0
        rate = len(batch) / elapsed if elapsed > 0 else float("nan")

    ext = {}
    for alias, images in (external or {}).items():
        p = call_plugin(plugin, "predict", f"{where}, external data set {alias}", backbone.predict, model, images, None)
        ext[alias] = check_probabilities(p, len(images), job.num_classes, f"{plugin} (predict on external {alias})")
    info = call_plugin(plugin, "info", where, backbone.info, model) or {}
    if not isinstance(info, dict):
        raise PluginError(f"{plugin} returned info of type {type(info).__name__} on {where}; return a dict")
    info = {**info, "timing": {"throughput_images": len(batch) if n_test else 0, "warmup_calls": 1, **timed_parts}}
    for name, kept in artefacts.items():  # the store writes the arrays beside the record, the summary into it
        info[name] = kept.summary
    return FoldOutcome(
        probabilities=probs,
        external=ext,
        train_seconds=train_seconds,
        predict_seconds=predict_seconds,
        infer_images_per_sec=rate,
        info=info,
        artefacts=artefacts,
    )


#: what a fold inspector's ``folder`` may be: a plain name, not one of the run directory's own folders
FOLDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
RESERVED_FOLDERS = {"folds", "failed", "plots", "splits"}


def inspect_fold(
    backbone: Backbone, plugin: str, model, job: FoldJob, probs: np.ndarray, request: InspectRequest, where: str
) -> dict[str, FoldArtefacts]:
    """Each of the suite's fold inspectors on the fold just scored, with its own model: name -> what it keeps.
    Never fails the fold: an inspector that raises or returns something else gets a warning, its traceback
    goes to the run's log, and the fold's record is stored as it would be without it. Not timed: the fold's
    timings are measured before and after without it."""
    fold = FinishedFold(
        backbone=backbone,
        plugin=plugin,
        alias=request.alias,
        model=model,
        job=job,
        probabilities=probs,
        y_test=np.asarray(request.y_test),
        classes=tuple(request.classes),
        where=where,
    )
    out = {}
    for chosen in request.inspectors:
        name, inspector = chosen.name, chosen.plugin
        folder = getattr(inspector, "folder", "") or name
        try:
            if not FOLDER_NAME.match(folder) or folder in RESERVED_FOLDERS:
                bad, folder = folder, ""
                raise ValueError(f"its folder {bad!r} is not a plain name of its own in a run directory")
            kept = inspector.inspect(fold, chosen.options)
            if kept is None:
                continue
            kept = replace(_checked_artefacts(kept), folder=folder)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            problem = f"fold inspector {name!r} failed on {where}: {type(exc).__name__}: {exc}"
            kept = FoldArtefacts(
                {"status": problem}, warning=problem, log=traceback.format_exc()[-4000:], folder=folder
            )
        out[name] = kept
    return out


def _checked_artefacts(kept) -> FoldArtefacts:
    """An inspector's return value as the store can write it: a FoldArtefacts with a dict summary and arrays
    of numbers or strings (never objects, which would need pickle)."""
    if not isinstance(kept, FoldArtefacts) or not isinstance(kept.summary, dict):
        raise TypeError(f"inspect() returned {type(kept).__name__}; return a FoldArtefacts (or None)")
    arrays = None
    if kept.arrays is not None:
        arrays = {str(k): np.asarray(v) for k, v in kept.arrays.items()}
        objects = [k for k, v in arrays.items() if v.dtype.hasobject]
        if objects:
            raise TypeError(f"arrays {objects} hold Python objects; store numbers or strings")
    return replace(kept, arrays=arrays)
