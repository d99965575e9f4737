"""The plain values that flow between stages, and the plugin interfaces.

Everything here is framework-free: a test can build any of these values by hand.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchbox.errors import BenchboxError

SAMPLE_COLUMNS = ("id", "label", "group", "source")


@dataclass(frozen=True)
class Availability:
    """Whether a plugin can run here; if not, why and how to fix it."""

    ok: bool
    reason: str = ""

    @staticmethod
    def needs_modules(*modules: str, install: str) -> Availability:
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if missing:
            return Availability(False, f"missing {', '.join(missing)}; install with: {install}")
        return Availability(True)


@dataclass
class SampleSet:
    """What a Dataset plugin returns: one row per image, and a way to get its pixels.

    ``table`` has at least the columns id, label, group (patient), source; ``load`` returns a
    uint8 array of the images, padded and resized to ``size`` (height, width): (N, H, W) grayscale
    when ``channels`` is 1 (the default), (N, H, W, 3) RGB when it is 3.
    """

    table: pd.DataFrame
    classes: tuple[str, ...]
    positive_class: str
    load: Callable[[pd.DataFrame, tuple[int, int]], np.ndarray]
    notes: list[str] = field(default_factory=list)  # facts worth keeping in the manifest
    fingerprint: str = ""
    warnings: list[str] = field(default_factory=list)  # what the user must see (shortfalls, skipped files)
    channels: int = 1  # 1: grayscale, load gives (N, H, W); 3: RGB, load gives (N, H, W, 3)

    def __post_init__(self):
        missing = [c for c in SAMPLE_COLUMNS if c not in self.table.columns]
        if missing:
            raise ValueError(f"sample table lacks columns {missing}")
        if self.positive_class not in self.classes:
            raise ValueError(f"positive class {self.positive_class!r} not in {self.classes}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), not {self.channels!r}")

    @property
    def labels(self) -> np.ndarray:
        """Integer labels in the order of ``classes``."""
        index = {c: i for i, c in enumerate(self.classes)}
        return self.table["label"].map(index).to_numpy(dtype=np.int64)


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    augment: bool = False  # random horizontal flips and shifts of up to 5% while training
    class_weight: str = "none"  # "balanced": weight the loss by inverse class frequency
    device: str = "auto"  # "auto" (a GPU where the engine sees one) | "cpu" | "cuda"
    precision: str = "fp32"  # "mixed": float16/bfloat16 compute with float32 weights (loss scaling on CUDA)


@dataclass
class FoldJob:
    """Everything a backbone needs to train on one fold: plain arrays, options, settings, a seed."""

    x_train: np.ndarray  # uint8 (N, H, W) grayscale, or (N, H, W, 3) RGB: see ``channels``
    y_train: np.ndarray  # int64 (N,)
    x_test: np.ndarray  # the test fold, so an engine may precompute per-image work (never its labels)
    num_classes: int
    options: Mapping[str, Any]  # the backbone's options, defaults merged with the suite's
    training: TrainingConfig
    seed: int
    progress: Callable[[int, int], None] | None = None  # (epoch done, epochs) for progress bars
    train_ids: Sequence[str] | None = None  # sample ids: let engines reuse per-image work across folds
    test_ids: Sequence[str] | None = None
    #: the suite's fold inspectors for this fold, with the test fold's labels (``InspectRequest``): read by
    #: the harness, which removes it before the backbone sees the job
    inspect: InspectRequest | None = None
    #: the training images' patients (group ids), so a scheme's inner cross-validation keeps patients apart
    train_groups: Sequence[str] | None = None

    @property
    def channels(self) -> int:
        """1 when the fold's images are grayscale (N, H, W), 3 when they are RGB (N, H, W, 3). An
        engine feeds RGB to a 3-channel network as it is and repeats grayscale to 3 channels."""
        return 3 if np.ndim(self.x_train) == 4 else 1


@dataclass(frozen=True)
class MetricSpec:
    """What an evaluator declares about one metric it computes; views render from this alone.

    The evaluator's result holds ``name`` and, where it has them, ``name_ci_low``/``name_ci_high``
    (the interval), ``name_fold_std`` (spread across folds) and ``name_folds`` (per-fold values,
    needed for a plot panel)."""

    name: str
    label: str
    scale: float = 1.0  # display multiplier: 100 shows a proportion as a percentage
    unit: str = ""  # "%" after scaling by 100, "" for a plain number
    higher_is_better: bool = True
    interval: str = "none"  # "wilson" | "bootstrap" | "none": how name_ci_low/high were made
    digits: int = 2
    table: bool = True  # a column of the comparison table
    plot: bool = False  # a panel of the per-fold plot
    #: the paired test on pooled out-of-fold predictions that fits this metric (leaderboards, boards):
    #: "auc" (DeLong, on the positive class's probability), "accuracy" (exact McNemar, on top-1
    #: correctness), or "" (none: only the corrected resampled t-test over per-fold values)
    paired_test: str = ""


@dataclass
class Section:
    """A table a plugin adds to a run's report, with optional notes and one line per cell that a
    leaderboard shows beside the entry (e.g. a shortcut verdict)."""

    title: str
    table: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    annotations: dict = field(default_factory=dict)  # CellKey -> one line
    csv: str | None = None  # also write the table to this file of the run directory
    in_report: bool = True  # False: only the CSV file (e.g. a long-form table)
    #: titles of the plot groups the plugin draws into the run's plots/, by file prefix (PREFIX__*.png):
    #: report.html shows each group under its title, after the core's own plots
    plots: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Steps:
    """What a backbone's ``bench_steps`` hands to the timer (benchbox.execute.bench.measure) for one
    model, batch size and mode: ``step`` runs one step, ``sync`` waits for the device's queued work."""

    step: Callable[[], None]
    sync: Callable[[], None] = lambda: None


def balanced_class_weights(y: np.ndarray, num_classes: int) -> np.ndarray:
    """n / (k * count_c) per class (scikit-learn's "balanced"); 0 for a class absent from y."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=num_classes).astype(float)
    with np.errstate(divide="ignore"):
        return np.where(counts > 0, len(y) / (num_classes * counts), 0.0)


class Contribution:
    """What every contributed object has: a name the registry finds it by, a one-line description for
    `benchbox plugins`, the options a suite may set (with their defaults: their types follow them),
    whether it can run here, and its own check of option values."""

    name: str = ""
    description: str = ""
    #: options a suite may set, with their defaults
    defaults: Mapping[str, Any] = {}

    def availability(self) -> Availability:
        """Whether it can run here; if not, why and the install command."""
        return Availability(True)

    def check_options(self, options: Mapping[str, Any]) -> list[str]:
        """Problems with option *values* that need no data (so `benchbox validate` finds them), each
        ``"key: message"``; empty when fine."""
        return []


class Dataset(Contribution):
    """A Dataset plugin: a named source of labelled, grouped images."""

    def samples(self, options: Mapping[str, Any], seed: int, data_dir: str | None) -> SampleSet:
        raise NotImplementedError


class Backbone(Contribution):
    """A Backbone plugin: builds a network (cutoff + head), trains it on a fold, predicts images.

    The harness owns the clock: it times ``fit`` (training), ``predict`` on the test fold, and
    inference throughput (``predict`` on one batch, warm-up excluded, ``synchronize`` before each
    clock read) the same way for every backbone. Whatever a plugin measures itself goes in ``info``
    as a breakdown, never as the headline."""

    name: str = ""  # "framework/network", e.g. "keras/mobilenet_v2"
    framework: str = ""
    defaults: Mapping[str, Any] = {}
    #: types of options whose default does not say them all, e.g. {"freeze": (str, float)}
    option_types: Mapping[str, Any] = {}
    #: the fold channels ``fit``/``predict`` take: (1, 3) (the default) both, the backbone converts as it
    #: needs; (1,) grayscale (N, H, W) only; (3,) RGB (N, H, W, 3) only. The harness refuses a fold of
    #: other channels before ``fit``, naming the backbone and what to do (benchbox.execute.harness.channels_problem)
    accepted_channels: tuple[int, ...] = (1, 3)
    #: the smallest height and width the network takes (its strides and pooling shrink a smaller image to
    #: nothing): `benchbox validate` refuses a smaller ``input_size`` naming it, instead of a failed fold
    min_input_size: int = 32

    def prepare(self, options: Mapping[str, Any]) -> None:
        """Fail fast, before any data is loaded, when e.g. the requested weights cannot be had."""

    def fit(self, job: FoldJob) -> Any:
        """Build and train a model on ``job``; return it (any object ``predict`` understands)."""
        raise NotImplementedError

    def predict(self, model: Any, images: np.ndarray, ids: Sequence[str] | None = None) -> np.ndarray:
        """Class probabilities (N, num_classes), rows summing to one, for uint8 images (N, H, W)
        or (N, H, W, 3) (the fold's channels; an external data set's images come in the trained-on
        data set's channels, converted by the harness).

        ``ids`` name the images when they come from the job's test fold (an engine may reuse work it
        cached for them); with ``ids=None`` the whole network must run, as deployed."""
        raise NotImplementedError

    def synchronize(self, model: Any) -> None:
        """Wait for queued device work (e.g. CUDA) so the harness's clock reads are true."""

    def info(self, model: Any) -> dict:
        """Facts about a trained model for its fold record: parameter counts, cache use, timings breakdown."""
        return {}

    def describe(self, options: Mapping[str, Any], input_size: Sequence[int]) -> dict:
        return {"framework": self.framework}

    def embed(
        self, images: np.ndarray, options: Mapping[str, Any], training: TrainingConfig | None = None
    ) -> np.ndarray:
        """Optional: (N, D) float32 pooled features of the frozen, pretrained network (no head, no
        training) for uint8 images (N, H, W) or (N, H, W, 3), batched on ``training.device`` where given.
        The frozen schemes (``scheme = "linear-probe"`` or ``"knn"``, benchbox/execute/schemes.py) classify
        them with scikit-learn; the embedding cache keys them by ``embed_identity`` and each image's pixels,
        so the features must depend on nothing else (no seed, no fold). Not implemented: the backbone
        can only be fine-tuned, and `benchbox validate` says so."""
        raise NotImplementedError(f"{self.name or type(self).__name__} does not implement embed()")

    def embed_identity(self, options: Mapping[str, Any]) -> dict:
        """What decides ``embed``'s features (network, weights, pooling, preprocessing, input size): the
        embedding cache's key. The default is every option; leave out those that only training reads
        (head, dropout, freeze), so suites that differ in them share the cache. A ``weights`` value
        naming a file or folder is keyed by the content hash of its files."""
        return dict(options)

    def bench_steps(
        self, options: Mapping[str, Any], batch_size: int, device: str, amp: bool, channels_last: bool, train: bool
    ) -> dict:
        """Optional, for `benchbox bench`: a training step (``train``) or an inference step of a
        freshly built network on random inputs of ``batch_size``, on ``device`` ("cpu" or "cuda"),
        with ``amp`` mixed precision and the ``channels_last`` layout where the framework has one.
        Returns ``{"steps": Steps, "params": parameter count, "gmacs": GMACs per image or None}``;
        the default says this backbone cannot be benchmarked."""
        raise BenchboxError(
            f"{self.name or type(self).__name__}: this plugin does not implement bench_steps(); it cannot be benchmarked"
        )

    def explain(self, model: Any, images: np.ndarray, target_classes: np.ndarray, layer: str = "auto") -> np.ndarray:
        """Optional: Grad-CAM heat maps (N, h, w) in [0, 1] of ``model`` for uint8 images (N, H, W)
        (or (N, H, W, 3) RGB, as the fold's),
        one per image for its class in ``target_classes`` (the predicted one), at the resolution of
        ``layer`` ("auto": the backbone's last feature map, the one the head pools; else a name
        ``feature_maps`` lists). Called by the Grad-CAM fold inspector (plugins/benchbox_explain) after
        prediction when the suite turns it on; the default says this backbone cannot draw maps, and
        `benchbox validate` refuses such a suite."""
        raise NotImplementedError(f"{self.name or type(self).__name__} does not implement explain()")

    def feature_maps(self, options: Mapping[str, Any]) -> list[tuple[str, tuple[int, int]]]:
        """Optional: every layer of the network ``options`` build whose output is a spatial feature map,
        as ``(name, (height, width))`` at ``options["input_size"]``, in network order: the names a
        per-layer tool may be given (e.g. a Grad-CAM target layer), checked by `benchbox validate` before
        anything trains. The network is built with random weights (nothing is downloaded), so this costs
        a build; it is asked only when a suite names a layer. The default: the plugin cannot list them."""
        raise NotImplementedError(f"{self.name or type(self).__name__} does not implement feature_maps()")


class BackboneFamily:
    """An open-ended set of backbones named ``PREFIX/MODEL`` (e.g. every model timm lists).

    A plugin that can build thousands of networks contributes one family instead of thousands of
    Backbone objects: the registry asks it for ``timm/convnext_atto`` only when a suite, a command or
    a listing names it. Explicitly contributed backbones win over a family's (``keras/vgg19`` is the
    study's own even though the ``keras`` family could build VGG19 too)."""

    prefix: str = ""  # "timm": names are "timm/<model>"
    framework: str = ""
    description: str = ""

    def availability(self) -> Availability:
        return Availability(True)

    def models(self) -> list[str]:
        """Every model name this family can build (for listing and closest-match suggestions)."""
        raise NotImplementedError

    def backbone(self, model: str) -> Backbone | None:
        """The Backbone named ``f"{prefix}/{model}"``, or None when the family has no such model."""
        raise NotImplementedError


class Evaluator(Contribution):
    """An Evaluator plugin: turns the fold records of one cell into metrics it declares."""

    #: every metric ``evaluate`` returns that a view should show, rank or plot
    metrics: tuple[MetricSpec, ...] = ()

    def evaluate(self, records: Sequence[Any], classes: Sequence[str], positive_class: str) -> dict[str, Any]:
        """Metrics of one cell from its ``benchbox.execute.records.FoldRecord`` list (pooled over folds)."""
        raise NotImplementedError

    def evaluate_each(
        self, records: Sequence[Any], classes: Sequence[str], positive_class: str
    ) -> list[dict[str, Any]]:
        """The metrics of each record alone (one fold, or one model's predictions), intervals not needed:
        the spread across folds or models (``<metric>_fold_std`` of the cross-dataset matrix). The
        default evaluates each record on its own; an evaluator whose intervals are costly (a bootstrap)
        gives its point values only."""
        return [self.evaluate([r], classes, positive_class) for r in records]

    def sections(self, result: Any) -> list[Section]:
        """Extra report tables from a whole run (``benchbox.results.summary.RunResult``)."""
        return []

    def plots(self, result: Any, directory: Path) -> list[Path]:
        """Write PNG plots of a run into ``directory``; return their paths (matplotlib is installed)."""
        return []


@dataclass
class VerifyReport:
    """What `benchbox data verify` found for one data source under a data root."""

    source: str
    root: str
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.changed)


class DataSource(Contribution):
    """A raw data source a Dataset plugin reads: where it comes from and how to fetch/verify it.

    ``benchbox data fetch`` and ``benchbox data verify`` work through these objects only, so the
    core never imports a data plugin."""

    home: str = ""  # the project page a user can read
    layout: str = ""  # what the source looks like under the data root, for placing it by hand

    def fetch(self, root: Path, progress: Callable[[int, int | None], None] | None = None) -> Path:
        """Download, check and unpack into ``root``; return the source's folder. Raise DataError."""
        raise NotImplementedError

    def verify(self, root: Path) -> VerifyReport:
        """Compare the files under ``root`` with what this source should hold."""
        raise NotImplementedError


# --- strategies: every closed choice of a run, registered like backbones (docs/architecture.md) ------------------
class SplitStrategy(Contribution):
    """How a protocol draws its folds: one strategy per ``[protocol] kind`` (scikit-learn's splitters are
    the model: one small object behind one ``assign`` call).

    The suite's ``[protocol]`` table, less ``kind``, is the strategy's ``options``: it declares the keys it
    takes in ``defaults`` (their types follow the defaults) and checks their values in ``check_options``,
    so a suite is validated by its own strategy."""

    # name: the ``protocol.kind`` that selects it, e.g. "kfold"; defaults: the [protocol] keys it takes
    #: every cell's models also predict the suite's other data sets (the cross-dataset matrix)
    crosses_datasets: bool = False
    #: the metrics of that matrix, in order, each with the evaluator that supplies it, e.g.
    #: ``{"auc": "clinical"}``: its cells are scored by these evaluators whatever the suite lists (one the
    #: suite does not list is added for the matrix, and the report says so; benchbox/results/matrix.py)
    matrix_metrics: Mapping[str, str] = {}

    def label(self, options: Mapping[str, Any]) -> str:
        """How tables and leaderboards name the protocol, e.g. "10-fold (stratified+grouped)"."""
        return self.name

    def within_label(self, options: Mapping[str, Any]) -> str:
        """The protocol of a run's within-data-set entries, as the leaderboard groups them (a
        cross-dataset run's own k-fold figures rank with a k-fold run's)."""
        return self.label(options)

    def n_folds(self, options: Mapping[str, Any]) -> int | None:
        """The folds it draws when the options alone say (``k``); None when the data decide."""
        return None

    def repeats(self, options: Mapping[str, Any]) -> int:
        """Repeats of a repeated cross-validation: ``assign`` then returns one row of folds per repeat
        (shape ``(r, n)``, repeat ``j``'s folds numbered after repeat ``j-1``'s); 1 for a plain split."""
        return 1

    def refit(self, options: Mapping[str, Any]) -> bool:
        """Whether each cell trains one more model on its whole data set (stored as fold ``n_folds``),
        whose predictions of the other data sets count; its own data are not scored."""
        return False

    def assign(
        self, options: Mapping[str, Any], labels: np.ndarray, groups: np.ndarray, sources: np.ndarray, seed: int
    ) -> np.ndarray:
        """The test fold of each sample (int64, 0..n_folds-1; -1: train only), one row per repeat when
        ``repeats`` says more than 1, seeded; raise
        :class:`benchbox.errors.BenchboxError` naming the option to change when the data cannot be split."""
        raise NotImplementedError


class Executor(Contribution):
    """Who trains a run's units of work (cell x fold): in this process, on a cluster... Selected by
    ``[executor] kind`` or ``--executor``; every executor runs each unit through the same harness
    (``benchbox.execute.harness.run_fold``), so timings and records do not depend on it. Its
    ``defaults`` are the [executor] keys it takes besides ``kind``."""

    def label(self, options: Mapping[str, Any]) -> str:
        return self.name

    def run(self, units, images: dict, externals: dict, on_done, on_failed, reporter, options, registry) -> None:
        """Train every unit; call ``on_done(unit, outcome)`` or ``on_failed(unit, message, detail)`` for
        each, in the driver (they write the records), in any order."""
        raise NotImplementedError


class OutputFormat(Contribution):
    """A way to write results: a run's report (``benchbox report --format``, and the files every run
    directory gets) and/or a leaderboard (``benchbox leaderboard --format``)."""

    # name: what --format takes, e.g. "markdown"
    aliases: tuple[str, ...] = ()  # other words --format accepts, e.g. ("md",)
    suffix: str = ""  # file suffix, e.g. ".md"
    #: the file written into every run directory with this format (e.g. "report.md"); None: on request only
    run_file: str | None = None

    @property
    def renders_runs(self) -> bool:
        return type(self).render_run is not OutputFormat.render_run

    @property
    def renders_leaderboards(self) -> bool:
        return type(self).render_leaderboard is not OutputFormat.render_leaderboard

    def render_run(self, result: Any) -> str:
        """The text of one run's report (``result``: ``benchbox.results.summary.RunResult``)."""
        raise NotImplementedError

    def render_leaderboard(self, ranked: pd.DataFrame, spec: MetricSpec, output: Path | None = None) -> str:
        """The text of a leaderboard: ``ranked`` has one row per entry (``group``, ``rank``, the metric...);
        ``output`` is where it will be written (for relative links)."""
        raise NotImplementedError


class Tracker(Contribution):
    """Where a run's progress and results are mirrored (an experiment tracker): selected by a table of
    the suite's ``[tracking]`` (``[tracking.NAME]``) or a command-line option. It observes; it never
    changes what a run computes (the table is not part of the suite's digest).

    Called in the driver only. ``start`` may raise to stop a run before anything is trained (e.g. the
    tracker cannot be reached); later failures should warn rather than raise. Its ``defaults`` are the
    keys of its [tracking.NAME] table."""

    def start(self, run_dir: Path, manifest: Mapping[str, Any], options: Mapping[str, Any]) -> None:
        """A run starts or resumes (its manifest is written)."""

    def fold_end(self, run_dir: Path, record: Any, options: Mapping[str, Any]) -> None:
        """A fold record was written (``benchbox.execute.records.FoldRecord``)."""

    def end(self, run_dir: Path, result: Any, options: Mapping[str, Any]) -> None:
        """The session ends, after the views are written (``benchbox.results.summary.RunResult``)."""


@dataclass(frozen=True)
class Chosen:
    """A registered strategy chosen by name, with its options (defaults merged): the plain value a
    suite's [protocol] or [executor] table becomes (benchbox/define/suite.py ``chosen_strategy``)."""

    name: str
    options: Mapping[str, Any]
    plugin: Any = field(compare=False, repr=False)

    @property
    def label(self) -> str:
        return self.plugin.label(self.options)


# --- fold inspectors: act on each finished fold with its trained model (docs/plugins.md) ---------------------
@dataclass(frozen=True)
class InspectRequest:
    """What the harness needs to run a suite's fold inspectors on one fold: the inspectors with their
    options, and what they may see that the backbone may not (the test fold's labels). The plan puts it
    in ``FoldJob.inspect``; the harness removes it before the backbone sees the job."""

    inspectors: tuple[Chosen, ...]
    y_test: np.ndarray  # int64 labels of the test fold, in the order of ``FoldJob.x_test``
    classes: tuple[str, ...]
    alias: str  # the suite's name for the backbone ([backbones.ALIAS])


@dataclass
class FinishedFold:
    """A fold the harness has just trained and scored, as a fold inspector sees it. The model is alive
    only now: benchbox keeps no trained model after its fold."""

    backbone: Backbone  # as the harness ran it (a frozen scheme's wrapper included)
    plugin: str  # its registry name, e.g. "torch/mobilenet_v2"
    alias: str  # the suite's name for it ([backbones.ALIAS])
    model: Any  # what ``fit`` returned
    job: FoldJob  # the fold: x_test, test_ids, num_classes, options... (``inspect`` removed)
    probabilities: np.ndarray  # the test fold's, checked: (n_test, num_classes), rows summing to one
    y_test: np.ndarray  # the test fold's labels (never shown to the backbone)
    classes: tuple[str, ...]
    where: str  # "data x backbone fold N", for messages


@dataclass
class FoldArtefacts:
    """What a fold inspector keeps of one fold. ``summary`` (JSON values) goes into the fold record as
    ``info[NAME]``; ``arrays`` (numpy arrays of numbers or strings, no objects) are written atomically,
    *before* the record, to ``FOLDER/<cell>__foldNN.npz`` of the run directory (FOLDER: the inspector's
    ``folder``), and the summary gets that path as ``file``. Without arrays, a file a former run of the
    fold left there is removed."""

    summary: dict
    arrays: Mapping[str, np.ndarray] | None = None
    warning: str | None = None  # shown once when the fold is stored (not kept in the record)
    log: str | None = None  # detail for the run's log (benchbox.log), e.g. a traceback
    folder: str = ""  # set by the harness from the inspector


@dataclass(frozen=True)
class SuiteBackbone:
    """One ``[backbones.ALIAS]`` entry of a suite, as a fold inspector checks it at validate."""

    alias: str
    plugin: str  # the registry name, e.g. "keras/mobilenet_v2"
    backbone: Backbone  # the registry's object
    options: Mapping[str, Any]  # the plugin's defaults merged with the suite's (input_size, scheme included)


class FoldInspector(Contribution):
    """Acts on each scored fold with the fold's own trained model, before benchbox drops it (e.g. Grad-CAM
    maps, plugins/benchbox_explain), and keeps what it finds with the fold record (``FoldArtefacts``).

    Turned on by a top-level table of the suite named like it (``[explain]``), whose keys are its
    ``defaults`` (their types follow them, or ``option_types``) and whose values its ``check_options``
    checks. The table is part of the suite's content: adding it starts a new run directory (finished folds
    cannot be inspected afterwards). It runs on the machine that trains (a Ray worker too), after the test
    fold is predicted and outside the timed calls; a cross-dataset refit model is not inspected."""

    #: option types a default does not say, e.g. {"layer": (str, dict)}
    option_types: Mapping[str, Any] = {}
    #: the run directory's folder for its arrays (a plain name); "" (the default): its ``name``
    folder: str = ""

    def settings(self, table: Mapping[str, Any], seed: int) -> dict:
        """Its options: ``defaults`` merged with the suite's table (``seed``: the suite's seed, for an
        inspector that samples)."""
        return {**dict(self.defaults), **dict(table)}

    def check_backbones(
        self, options: Mapping[str, Any], backbones: Mapping[str, SuiteBackbone | None], networks: bool
    ) -> list[str]:
        """Problems with inspecting the suite's backbones (``None``: an entry whose own problems are reported
        already), found before anything trains; each ``"key: message"``, the key from the suite's root
        (``backbones.ALIAS`` or ``NAME.key``). ``networks``: `benchbox validate` and `run` may afford a network
        build (``Backbone.feature_maps``); False where a suite is only read."""
        return []

    def inspect(self, fold: FinishedFold, options: Mapping[str, Any]) -> FoldArtefacts | None:
        """What to keep of ``fold`` (None: nothing). Raising does not fail the fold: the harness turns it
        into a warning and keeps the traceback in the run's log."""
        raise NotImplementedError


@dataclass(frozen=True)
class CliOption:
    """A command-line option a plugin adds to `benchbox run` (and `bench` where ``bench`` is true), the
    role of pytest's ``pytest_addoption``.

    ``apply(value, overrides)`` runs when the option is given, after the arguments are parsed and before
    any suite is read or backbone built (e.g. choosing a framework's backend). ``overrides`` is a dict
    the command merges into the suite: ``overrides["tracking"][NAME] = {...}`` turns a tracker on with
    those options. It may raise a BenchboxError naming the option and what to do."""

    flag: str  # "--keras-backend"
    help: str
    apply: Callable[[Any, dict], None]
    type: type = str
    bench: bool = True  # also an option of `benchbox bench`
