"""Suites: TOML files that declare data sets, backbones, a protocol and training settings.

``load_suite`` parses and validates a file against the installed plugins and reports every
problem at once (file, key, what is allowed). The result is a plain ``Suite`` value. The schema
is documented in docs/suites.md.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from benchbox.contracts import Chosen, SuiteBackbone, TrainingConfig
from benchbox.data.probes import PROBE_OPTIONS, PROBES, THRESHOLDS
from benchbox.data.splitters import Protocol
from benchbox.define.tables import data_problems
from benchbox.errors import BenchboxError, SuiteError, did_you_mean
from benchbox.execute.records import CellKey
from benchbox.execute.schemes import DEFAULT_K, FINE_TUNE, SCHEME_KEYS, SCHEMES
from benchbox.execute.schemes import option_problems as scheme_problems
from benchbox.plugins import unknown_plugin_message

TOP_KEYS = {
    "name",
    "description",
    "seed",
    "output_dir",
    "data_dir",
    "evaluators",
    "protocol",
    "training",
    "datasets",
    "backbones",
    "experiments",
    "executor",
    "probes",
    "tracking",
    "scheme",
}
TRAINING_KEYS = {
    "epochs": int,
    "batch_size": int,
    "optimizer": str,
    "learning_rate": float,
    "augment": bool,
    "class_weight": str,
    "device": str,
    "precision": str,
}
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "mixed")
OPTIMIZERS = ("adam",)
DEFAULT_PROTOCOL = "kfold"
DEFAULT_EXECUTOR = "local"
DEFAULT_EVALUATORS = ("paper", "clinical")
ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# keys every backbone understands, handled by the runner rather than the plugin
COMMON_BACKBONE_KEYS = {"plugin": str, "input_size": list, "weights": str, **SCHEME_KEYS}
COMMON_DATASET_KEYS = {"plugin": str, "positive_class": str}
#: dataset options that name a file or folder: relative ones are resolved like weights files
PATH_OPTIONS = ("root", "file")
MAX_SEED = 2**32 - 1
MAX_SIDE = 2048  # pixels per side of an input; beyond it one batch alone needs tens of GiB


@dataclass(frozen=True)
class DatasetEntry:
    alias: str
    plugin: str
    options: dict


@dataclass(frozen=True)
class BackboneEntry:
    alias: str
    plugin: str
    options: dict  # plugin defaults merged with the suite's values, input_size and weights included

    @property
    def input_size(self) -> tuple[int, int]:
        h, w = self.options["input_size"]
        return int(h), int(w)

    @property
    def scheme(self) -> str:
        """ "fine-tune" (the default), "linear-probe" or "knn" (benchbox/execute/schemes.py)."""
        return str(self.options.get("scheme", FINE_TUNE))


@dataclass
class Suite:
    path: Path
    name: str
    seed: int
    description: str
    output_dir: Path
    data_dir: str | None
    protocol: Protocol
    training: TrainingConfig
    datasets: dict[str, DatasetEntry]
    backbones: dict[str, BackboneEntry]
    cells: list[CellKey]  # in run order; probe cells follow their standard cell
    evaluators: list[str]
    external: dict = field(default_factory=dict)  # CellKey -> test-only dataset aliases
    executor: dict = field(default_factory=dict)  # how to run, not what: excluded from the digest
    tracking: dict = field(default_factory=dict)  # where results are mirrored ({"mlflow": {...}}): not in the digest
    probes: dict = field(default_factory=dict)  # probe name -> options (see benchbox/data/probes.py)
    thresholds: dict = field(default_factory=dict)  # verdict thresholds of the shortcut report
    #: the fold inspectors the suite turns on (a top-level table each, e.g. [explain]), options merged
    inspectors: dict[str, Chosen] = field(default_factory=dict)
    #: with check_data: alias -> images, patients and {class: (images, patients)} (`benchbox validate` prints them)
    data_counts: dict = field(default_factory=dict)
    raw: dict = field(repr=False, default_factory=dict)
    text: str = field(repr=False, default="")

    @property
    def digest(self) -> str:
        """Identity of what the suite computes (used to decide whether a run can be resumed).

        ``executor`` and ``tracking`` say how a run is executed and where its results are mirrored,
        not what it computes: changing them keeps the digest, so a run can be resumed with them."""
        return raw_digest(self.raw)


def raw_digest(raw: dict) -> str:
    """The digest of a suite's parsed TOML (``Suite.digest``), computable without its plugins."""
    what = {k: v for k, v in raw.items() if k not in ("executor", "tracking")}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _type_ok(value, expected) -> bool:
    if isinstance(expected, tuple):  # a plugin's option that takes several types, e.g. freeze: str or number
        return any(_type_ok(value, e) for e in expected)
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is type(None):
        return True
    return isinstance(value, expected)


def _type_name(expected) -> str:
    if isinstance(expected, tuple):
        return " or ".join(_type_name(e) for e in expected)
    return {
        bool: "true/false",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(expected, expected.__name__)


def unknown_key_message(key, allowed) -> str:
    """The error text for a key a table does not take: the closest allowed key first, then all of them."""
    return f"unknown key{did_you_mean(key, allowed)}; allowed: {', '.join(sorted(allowed))}"


class _Checker:
    def __init__(self, path):
        self.path = path
        self.problems: list[str] = []

    def add(self, key, message):
        self.problems.append(f"{key}: {message}")

    def keys(self, where: str, table: dict, allowed):
        for key in table:
            if key not in allowed:
                self.add(f"{where}.{key}" if where else key, unknown_key_message(key, allowed))

    def typed(self, where: str, table: dict, schema: dict):
        for key, expected in schema.items():
            if key in table and not _type_ok(table[key], expected):
                self.add(f"{where}.{key}", f"must be {_type_name(expected)}, got {table[key]!r}")


def _schema_from_defaults(defaults: dict) -> dict:
    schema = {}
    for key, value in defaults.items():
        schema[key] = type(None) if value is None else (float if isinstance(value, float) else type(value))
    return schema


def load_suite(
    path,
    registry,
    check_availability: bool = False,
    check_data: bool = False,
    data_dir=None,
    check_networks: bool = False,
) -> Suite:
    """Parse and validate a suite file; raise SuiteError listing every problem.

    ``check_data`` (`benchbox validate`): also read each data set's sample table (listing folders,
    reading CSVs, no pixels) under ``data_dir`` (else the suite's data_dir) and report its problems.
    ``check_networks`` (`benchbox validate` and `run`): plugins may build a network (random weights) to
    check what the suite names in it, e.g. a fold inspector's layer names."""
    path = Path(path)
    if path.is_dir():
        raise SuiteError(path, ["is a folder; pass a suite file (TOML), e.g. suites/quickstart.toml"])
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SuiteError(path, [f"cannot read the file: {exc.strerror}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SuiteError(
            path,
            [
                f"line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); TOML files must be "
                "UTF-8 — save it with that encoding"
            ],
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(path, [f"not valid TOML: {exc}"]) from None
    return validate_suite(
        raw,
        path,
        registry,
        text=text,
        check_availability=check_availability,
        check_data=check_data,
        data_dir=data_dir,
        check_networks=check_networks,
    )


def validate_suite(
    raw: dict,
    path,
    registry,
    text: str = "",
    check_availability: bool = False,
    check_data: bool = False,
    data_dir=None,
    check_networks: bool = False,
) -> Suite:
    c = _Checker(path)
    c.keys("", raw, TOP_KEYS | inspector_tables(registry))
    c.typed(
        "",
        raw,
        {
            "name": str,
            "description": str,
            "seed": int,
            "output_dir": str,
            "data_dir": str,
            "evaluators": list,
            "protocol": dict,
            "training": dict,
            "datasets": dict,
            "backbones": dict,
            "experiments": list,
            "tracking": dict,
            "scheme": str,
        },
    )
    default_scheme = raw.get("scheme")
    if isinstance(default_scheme, str) and default_scheme not in SCHEMES:
        c.add("scheme", f"unknown scheme {default_scheme!r}{did_you_mean(default_scheme, SCHEMES)}; allowed: "
              f"{', '.join(SCHEMES)} (the default of every [backbones.*] entry)")  # fmt: skip
        default_scheme = None
    name = raw.get("name")
    if not isinstance(name, str) or not ALIAS.match(name):
        c.add("name", "required: a name of letters, digits, '-', '_' or '.' (it names the run directory)")
    seed = raw.get("seed", 0)
    if _type_ok(seed, int) and not 0 <= seed <= MAX_SEED:
        c.add("seed", f"must be between 0 and {MAX_SEED} (2**32 - 1), got {seed}")
    output_dir = raw.get("output_dir", "runs")
    try:
        blocker = file_in_the_way(Path(output_dir)) if isinstance(output_dir, str) else None
    except BenchboxError as exc:
        blocker = None
        c.add("output_dir", str(exc))
    if blocker is not None:
        what = "is a file" if blocker == Path(output_dir) else f"lies under {str(blocker)!r}, which is a file"
        c.add("output_dir", f"{output_dir!r} {what}; runs are written into a folder — name another path")

    protocol_raw = raw.get("protocol", {}) if isinstance(raw.get("protocol", {}), dict) else {}
    strategy, protocol_options = chosen_strategy(c.problems, "protocol", protocol_raw, registry, DEFAULT_PROTOCOL)
    protocol_ok = not any(problem.startswith("protocol") for problem in c.problems)

    training_raw = raw.get("training", {}) if isinstance(raw.get("training", {}), dict) else {}
    c.keys("training", training_raw, TRAINING_KEYS)
    c.typed("training", training_raw, TRAINING_KEYS)
    for key in ("epochs", "batch_size"):
        v = training_raw.get(key, 1)
        if isinstance(v, int) and v < 1:
            c.add(f"training.{key}", f"must be at least 1, got {v}")
    opt = training_raw.get("optimizer", "adam")
    if isinstance(opt, str) and opt.lower() not in OPTIMIZERS:
        c.add("training.optimizer", f"unknown optimizer {opt!r}; allowed: {', '.join(OPTIMIZERS)}")
    lr = training_raw.get("learning_rate", 1e-3)
    if isinstance(lr, (int, float)) and not lr > 0:
        c.add("training.learning_rate", f"must be positive, got {lr}")

    executor_raw = raw.get("executor", {}) if isinstance(raw.get("executor", {}), dict) else {}
    chosen_strategy(c.problems, "executor", executor_raw, registry, DEFAULT_EXECUTOR)
    tracking = _tracking(c, raw, registry)
    inspectors = _inspector_settings(c, raw, registry)
    datasets = _entries(c, raw, "datasets", registry, "dataset", COMMON_DATASET_KEYS, check_availability)
    backbones = _entries(c, raw, "backbones", registry, "backbone", COMMON_BACKBONE_KEYS, check_availability)
    backbones = _schemes(c, backbones, registry, default_scheme if isinstance(default_scheme, str) else None)
    for alias, entry in backbones.items():
        size = entry.options.get("input_size")
        if any(p.startswith(f"backbones.{alias}.input_size:") for p in c.problems):
            pass  # its type is already reported: one line per mistake
        elif not (isinstance(size, list) and len(size) == 2 and all(_type_ok(v, int) and v >= 32 for v in size)):
            c.add(f"backbones.{alias}.input_size", f"must be [height, width], integers >= 32, got {size!r}")
        elif min(size) < (least := _min_input_size(registry, entry.plugin)):
            c.add(
                f"backbones.{alias}.input_size",
                f"{size[0]}x{size[1]} is below what {entry.plugin} takes ({least}x{least} at least: its strides and "
                "pooling shrink a smaller image to nothing); use a larger input_size",
            )
        elif max(size) > MAX_SIDE:
            batch = training_raw.get("batch_size", 64) if _type_ok(training_raw.get("batch_size", 64), int) else 64
            gib = batch * size[0] * size[1] * 3 * 4 * 64 / 2**30  # float32 RGB, ~64 activation maps per pixel
            c.add(
                f"backbones.{alias}.input_size",
                f"{size[0]}x{size[1]} is beyond {MAX_SIDE} pixels per side: one "
                f"training batch of {batch} would need about {gib:,.0f} GiB; X-ray studies use 200-512 px",
            )

    _check_inspected_backbones(c, raw, registry, inspectors, backbones, check_networks)

    cells, external = _cells(c, raw, datasets, backbones)
    if strategy is not None and strategy.crosses_datasets:
        cells, external = expand_cross_dataset(c, cells, external, datasets, protocol_raw.get("kind"))
    probes, thresholds = _probes(c, raw, datasets)
    cells, external = expand_probes(cells, external, probes)
    for key, allowed, default in (("device", DEVICES, "auto"), ("precision", PRECISIONS, "fp32")):
        if training_raw.get(key, default) not in allowed:
            c.add(f"training.{key}", f"must be one of {', '.join(allowed)}, got {training_raw.get(key)!r}")
    if training_raw.get("class_weight", "none") not in ("none", "balanced"):
        c.add("training.class_weight", f"must be 'none' or 'balanced', got {training_raw.get('class_weight')!r}")

    evaluators = raw.get("evaluators", list(DEFAULT_EVALUATORS))
    if isinstance(evaluators, list):
        for i, ev in enumerate(evaluators):
            if not isinstance(ev, str) or ev not in registry.evaluators:  # a list or table: unhashable
                c.add(
                    f"evaluators[{i}]",
                    f"unknown evaluator {ev!r}; available: {', '.join(sorted(registry.evaluators)) or 'none'}",
                )
    if strategy is not None:  # the matrix's metrics come from the evaluators its strategy names
        for metric, ev in dict(getattr(strategy, "matrix_metrics", {}) or {}).items():
            if ev not in registry.evaluators:
                c.add(
                    "protocol.kind",
                    f"{strategy.name!r} scores its matrix's {metric} with evaluator {ev!r}, which is not installed; "
                    f"install the plugin that provides it (installed: {', '.join(sorted(registry.evaluators))})",
                )

    # a protocol with a problem is not used to check the data (its folds cannot be drawn)
    protocol = Protocol(strategy.name, protocol_options, strategy) if protocol_ok and strategy else None
    data_counts: dict = {}
    if check_data:
        _data(c, raw, registry, datasets, cells, external, protocol, data_dir, backbones, data_counts)

    if c.problems:
        raise SuiteError(path, c.problems)
    return Suite(
        path=Path(path),
        name=name,
        seed=seed,
        description=raw.get("description", ""),
        output_dir=Path(output_dir),
        data_dir=raw.get("data_dir"),
        protocol=protocol,
        training=TrainingConfig(
            epochs=training_raw.get("epochs", 10),
            batch_size=training_raw.get("batch_size", 64),
            optimizer=opt.lower(),
            learning_rate=float(lr),
            augment=training_raw.get("augment", False),
            class_weight=training_raw.get("class_weight", "none"),
            device=training_raw.get("device", "auto"),
            precision=training_raw.get("precision", "fp32"),
        ),
        executor=dict(executor_raw),
        tracking=tracking,
        inspectors=inspectors,
        data_counts=data_counts,
        probes=probes,
        thresholds=thresholds,
        datasets=datasets,
        backbones=backbones,
        cells=cells,
        external=external,
        evaluators=list(evaluators),
        raw=raw,
        text=text,
    )


def _min_input_size(registry, plugin: str) -> int:
    """The smallest side a backbone takes (``Backbone.min_input_size``); 32 when it does not say."""
    entry = registry.backbones.get(plugin)
    least = getattr(entry.obj, "min_input_size", 32) if entry is not None else 32
    return least if isinstance(least, int) and not isinstance(least, bool) else 32


def _data(c: _Checker, raw, registry, datasets, cells, external, protocol, data_dir, backbones, counts) -> None:
    """The data sets' sample tables, read as `benchbox run` reads them (benchbox/define/plan.py), their
    problems added to the suite's; data sets whose options are already reported are not read."""
    bad = {
        alias
        for alias in datasets
        if any(p.startswith((f"datasets.{alias}.", f"datasets.{alias}:")) for p in c.problems)
    }
    ok = {alias: entry for alias, entry in datasets.items() if alias not in bad}
    root = data_dir or (raw.get("data_dir") if isinstance(raw.get("data_dir"), str) else None)
    seed = raw.get("seed", 0)
    seed = seed if _type_ok(seed, int) and 0 <= seed <= MAX_SEED else 0
    for problem in data_problems(ok, registry, seed, root, c.path, cells, external, protocol, backbones, counts):
        c.problems.append(problem)


#: the registry kind each strategy-chosen table of a suite names with its ``kind`` key
STRATEGY_KINDS = {"protocol": "split strategy", "executor": "executor"}


def chosen_strategy(problems: list[str], section: str, table: dict, registry, default: str):
    """A table whose ``kind`` names a registered strategy ([protocol]: a split strategy, [executor]: an
    executor), which declares the table's other keys (``defaults``) and checks their values
    (``check_options``). Appends "section.key: message" to ``problems``; returns (strategy, options with
    defaults merged), or (None, {}) when the kind is unknown."""
    kind = table.get("kind", default)
    registry_kind = STRATEGY_KINDS[section]
    before = len(problems)

    def add(key, message):
        problems.append(f"{section}.{key}: {message}")

    if not isinstance(kind, str):
        add("kind", f"must be a string, got {kind!r}")
        return None, {}
    try:
        strategy = registry.get(registry_kind, kind)
    except BenchboxError as exc:
        add("kind", str(exc).replace(f"unknown {registry_kind}", f"unknown {section}", 1))
        return None, {}
    takes = dict(strategy.defaults or {})
    schema = _schema_from_defaults(takes)
    for key in table:
        if key == "kind" or key in takes:
            continue
        takers = [f'"{e.name}"' for e in registry.table(registry_kind).values() if key in (e.obj.defaults or {})]
        if takers:
            add(key, f"applies to kind = {' or '.join(takers)} only (this {section} is {kind!r}); remove it")
        else:
            add(key, unknown_key_message(key, {"kind", *takes}))
    for key, expected in schema.items():
        if key in table and not _type_ok(table[key], expected):
            add(key, f"must be {_type_name(expected)}, got {table[key]!r}")
    options = {key: table.get(key, value) for key, value in takes.items()}
    if len(problems) == before:
        options = {k: float(v) if schema[k] is float else v for k, v in options.items()}
        try:
            found = strategy.check_options(options) or []
        except Exception as exc:  # a plugin's own check must not crash validation
            found = [f"kind: {registry_kind} {kind!r} failed to check its options: {type(exc).__name__}: {exc}"]
        problems.extend(f"{section}.{problem}" for problem in found)
    return strategy, options


def _tracking(c: _Checker, raw, registry) -> dict:
    """[tracking]: one table per tracker, named by the tracker (``mlflow = { uri = "...", experiment = "..." }``,
    or ``[tracking.mlflow]``), each checked by that tracker (docs/tracking.md). Returns the validated
    tables as given (``{}`` when absent): a key left out means the tracker's default."""
    tracking_raw = raw.get("tracking", {}) if isinstance(raw.get("tracking", {}), dict) else {}
    out = {}
    for name, table in tracking_raw.items():
        where = f"tracking.{name}"
        if name not in registry.trackers:
            c.add(where, unknown_plugin_message(registry.trackers, "tracker", name))
            continue
        if not isinstance(table, dict):
            c.add(where, f"must be a table of the tracker's options, e.g. {name} = {{}} for its defaults")
            continue
        c.problems.extend(tracker_problems(registry, name, table, where))
        out[name] = dict(table)
    return out


def tracker_problems(registry, name: str, options: dict, where: str) -> list[str]:
    """What tracker ``name`` finds wrong with ``options`` (unknown keys, types, its own check)."""
    tracker = registry.trackers[name].obj
    takes = dict(tracker.defaults or {})
    problems = [f"{where}.{key}: {unknown_key_message(key, takes)}" for key in options if key not in takes]
    schema = _schema_from_defaults(takes)
    problems += [
        f"{where}.{key}: must be {_type_name(schema[key])}, got {value!r}"
        for key, value in options.items()
        if key in schema and not _type_ok(value, schema[key])
    ]
    valid = {k: v for k, v in options.items() if k in schema and _type_ok(v, schema[k])}
    if valid:
        try:
            problems += [f"{where}.{p}" for p in tracker.check_options(valid) or []]
        except Exception as exc:  # a plugin's own check must not crash validation
            problems.append(f"{where}: tracker {name!r} failed to check its options: {type(exc).__name__}: {exc}")
    return problems


def with_tracking_overrides(tracking: dict, overrides: dict, registry) -> dict:
    """The suite's [tracking] with command-line overrides (``--mlflow URI``) merged, every tracker it
    turns on checked and available; a BenchboxError naming the tracker and the install command."""
    merged = {name: {**tracking.get(name, {}), **options} for name, options in overrides.items()}
    merged = {**tracking, **merged}
    problems = []
    for name, options in merged.items():
        problems += tracker_problems(registry, name, options, f"tracking.{name}") if name in registry.trackers else []
        try:
            registry.get("tracker", name)
        except BenchboxError as exc:
            problems.append(f"tracking.{name}: {exc}")
    if problems:
        raise BenchboxError("; ".join(problems))
    return merged


def inspector_tables(registry) -> set[str]:
    """The top-level tables that turn a fold inspector on: each registered inspector's name (a core key wins)."""
    return {name for name in registry.fold_inspectors if name not in TOP_KEYS}


def _inspector_settings(c: _Checker, raw, registry) -> dict[str, Chosen]:
    """Each fold inspector the suite turns on with a top-level table of its name (``[explain]``): the table's
    keys and types checked against the inspector's ``defaults``/``option_types``, its values by its own
    ``check_options``; returns name -> Chosen with the inspector's ``settings`` (defaults merged)."""
    seed = raw.get("seed", 0) if _type_ok(raw.get("seed", 0), int) else 0
    out = {}
    for name in sorted(inspector_tables(registry) & set(raw)):
        table = raw[name]
        if not isinstance(table, dict):
            c.add(name, f"must be a table of its options, e.g. [{name}] alone for the defaults")
            continue
        inspector = registry.fold_inspectors[name].obj
        schema = {**_schema_from_defaults(dict(inspector.defaults or {})), **dict(inspector.option_types or {})}
        c.keys(name, table, schema)
        c.typed(name, table, schema)
        valid = {k: v for k, v in table.items() if k in schema and _type_ok(v, schema[k])}
        try:
            found = inspector.check_options(valid) or []
            options = inspector.settings(valid, seed)
        except Exception as exc:  # a plugin's own check must not crash validation
            c.add(name, f"fold inspector {name!r} failed to check its options: {type(exc).__name__}: {exc}")
            continue
        c.problems.extend(f"{name}.{problem}" for problem in found)
        out[name] = Chosen(name, options, inspector)
    return out


def _check_inspected_backbones(c: _Checker, raw, registry, inspectors: dict, backbones: dict, networks: bool) -> None:
    """Each fold inspector's own check of the suite's backbones (``FoldInspector.check_backbones``): an entry
    whose problems are reported already is passed as None, so it is named once."""
    if not inspectors:
        return
    named = raw.get("backbones") if isinstance(raw.get("backbones"), dict) else {}
    given = {}
    for alias in named:
        entry = backbones.get(alias)
        reported = any(p.startswith((f"backbones.{alias}.", f"backbones.{alias}:")) for p in c.problems)
        if entry is None or reported or entry.plugin not in registry.backbones:
            given[alias] = None
            continue
        given[alias] = SuiteBackbone(alias, entry.plugin, registry.backbones[entry.plugin].obj, dict(entry.options))
    for name, chosen in inspectors.items():
        try:
            c.problems.extend(chosen.plugin.check_backbones(chosen.options, given, networks) or [])
        except Exception as exc:  # a plugin's own check must not crash validation
            c.add(name, f"fold inspector {name!r} failed to check the backbones: {type(exc).__name__}: {exc}")


def _entries(c: _Checker, raw, section, registry, kind, common, check_availability):
    """Validate [datasets.ALIAS] / [backbones.ALIAS] tables against their plugins' options."""
    entries = {}
    tables = raw.get(section)
    if not isinstance(tables, dict) or not tables:
        c.add(section, f'required: at least one [{section}.NAME] table with plugin = "..."')
        return entries
    available = registry.table(kind)
    for alias, table in tables.items():
        where = f"{section}.{alias}"
        if not ALIAS.match(alias):
            c.add(where, "names may use letters, digits, '-', '_' and '.' only")
        if not isinstance(table, dict):
            c.add(where, "must be a table")
            continue
        plugin = table.get("plugin")
        if not isinstance(plugin, str):
            c.add(f"{where}.plugin", f"required; available: {', '.join(sorted(available)) or 'none'}")
            continue
        if plugin not in available:
            c.add(f"{where}.plugin", unknown_plugin_message(available, kind, plugin))
            continue
        obj = available[plugin].obj
        if check_availability and not available[plugin].availability.ok:
            c.add(f"{where}.plugin", f"{plugin} is unavailable: {available[plugin].availability.reason}")
        defaults = dict(obj.defaults)
        schema = {**_schema_from_defaults(defaults), **dict(getattr(obj, "option_types", {}) or {}), **common}
        c.keys(where, table, schema)
        c.typed(where, table, schema)
        options = {**defaults, **{k: v for k, v in table.items() if k != "plugin"}}
        if kind == "dataset":
            for key in PATH_OPTIONS:
                if isinstance(options.get(key), str) and options[key]:
                    options[key] = _resolve_path(options[key], c.path)
        if kind == "backbone":
            options["weights"] = _resolve_path(options.get("weights"), c.path)
        for problem in plugin_option_problems(obj, plugin, options):
            c.add(where, problem)
        entries[alias] = (DatasetEntry if kind == "dataset" else BackboneEntry)(alias, plugin, options)
    return entries


def _schemes(c: _Checker, backbones: dict, registry, default: str | None) -> dict:
    """Each backbone entry's scheme (its own, else the suite's ``scheme``, else fine-tune) and ``k`` for
    knn (default 11), checked: a scheme misspelt, k on another scheme, a backbone that cannot embed."""
    out = {}
    for alias, entry in backbones.items():
        options = dict(entry.options)
        if "scheme" not in options and default is not None:
            options["scheme"] = default
        if options.get("scheme") == "knn" and "k" not in options:
            options["k"] = DEFAULT_K
        if any(p.startswith(f"backbones.{alias}.scheme:") or p.startswith(f"backbones.{alias}.k:") for p in c.problems):
            out[alias] = entry  # its type is reported already
            continue
        try:
            backbone = registry.get("backbone", entry.plugin)
        except BenchboxError:
            backbone = None  # unavailable: reported where availability is checked
        for problem in scheme_problems(options, backbone, entry.plugin):
            c.add(f"backbones.{alias}.{problem.split(':', 1)[0]}", problem.split(": ", 1)[1])
        out[alias] = BackboneEntry(alias, entry.plugin, options)
    return out


def dataset_options(registry, plugin: str, table: dict, path="") -> tuple[dict, list[str]]:
    """One data set's options checked as a suite's [datasets.NAME] table is (unknown keys with the
    closest match, types, the plugin's check_options): its options with defaults merged, and the
    problems, each ``KEY: message`` (e.g. for ``benchbox data export --option``)."""
    c = _Checker(path or Path.cwd() / "--option")
    entries = _entries(
        c,
        {"datasets": {plugin: {**table, "plugin": plugin}}},
        "datasets",
        registry,
        "dataset",
        COMMON_DATASET_KEYS,
        False,
    )
    prefix = f"datasets.{plugin}"
    problems = [p.removeprefix(f"{prefix}.").removeprefix(f"{prefix}: ") for p in c.problems]
    entry = entries.get(plugin)
    return (dict(entry.options) if entry is not None else {}), problems


def file_in_the_way(path: Path) -> Path | None:
    """The path itself, or the nearest existing folder above it, when that is a file (so no
    folder can be created there); None when the path can be a folder."""
    for candidate in (path, *path.parents):
        try:
            exists = candidate.exists()
        except OSError as exc:  # e.g. a name longer than the file system takes
            raise BenchboxError(
                f"{str(path)[:80]!r}: not a usable folder path ({exc.strerror}); name another path"
            ) from None
        if exists:
            return None if candidate.is_dir() else candidate
    return None


def plugin_option_problems(obj, plugin: str, options) -> list[str]:
    """A data set's or backbone's check_options, with a plugin that raises (or returns junk)
    reported, not crashing."""
    if not hasattr(obj, "check_options"):
        return []
    try:
        problems = obj.check_options(options) or []
        return [problems] if isinstance(problems, str) else [str(p) for p in problems]
    except Exception as exc:
        return [
            f"plugin {plugin} failed in check_options: {type(exc).__name__}: {exc} (a bug in that plugin; "
            "report it to its authors)"
        ]


def _probes(c: _Checker, raw, datasets):
    """[probes]: image probes and source-as-label with their options, within-source and
    external-source naming a data set of the suite, and the verdict thresholds."""
    table = raw.get("probes", {})
    if not isinstance(table, dict):
        c.add("probes", "must be a table")
        return {}, dict(THRESHOLDS)
    allowed = set(PROBES) | {"within-source", "external-source", "thresholds"}
    c.keys("probes", table, allowed)
    probes = {}
    for name, options in table.items():
        if name not in allowed or name == "thresholds":
            continue
        if not isinstance(options, dict):
            c.add(f"probes.{name}", "must be a table, e.g. {} for the defaults")
            continue
        if name in PROBE_OPTIONS:
            schema = {k: (float if isinstance(v, float) else type(v)) for k, v in PROBE_OPTIONS[name].items()}
            c.keys(f"probes.{name}", options, schema)
            c.typed(f"probes.{name}", options, schema)
            if options.get("apply", "train+test") not in ("train+test", "test"):
                c.add(f"probes.{name}.apply", "must be 'train+test' or 'test'")
            for key in ("fraction", "frame"):
                v = options.get(key)
                if isinstance(v, (int, float)) and not 0 < v < (1 if key == "fraction" else 0.5):
                    c.add(f"probes.{name}.{key}", f"must be between 0 and {1 if key == 'fraction' else 0.5}")
            probes[name] = {**PROBE_OPTIONS[name], **options}
        else:
            c.keys(f"probes.{name}", options, {"dataset"})
            if options.get("dataset") not in datasets:
                names = ", ".join(datasets) or "none"
                given = options.get("dataset")
                c.add(
                    f"probes.{name}.dataset",
                    f"required: a name from [datasets.*]: {names}"
                    if given is None
                    else f"{given!r} is not a data set of this suite; use a name from [datasets.*]: {names}",
                )
                continue
            probes[name] = dict(options)
    thresholds = table.get("thresholds", {})
    if not isinstance(thresholds, dict):
        thresholds = {}
    c.keys("probes.thresholds", thresholds, THRESHOLDS)
    c.typed("probes.thresholds", thresholds, {k: float for k in THRESHOLDS})
    return probes, {**THRESHOLDS, **thresholds}


def expand_probes(cells: list[CellKey], external: dict, probes: dict):
    """Every dataset x backbone cell gets a sibling cell per image/label probe, one on the
    within-source data set, and the external-source data set as a test-only set."""
    out = list(cells)
    for cell in list(cells):
        for name in probes:
            probed = CellKey(cell.dataset, cell.backbone, name)
            if name in PROBES and probed not in out:
                out.append(probed)
        within = CellKey(probes["within-source"]["dataset"], cell.backbone) if "within-source" in probes else None
        if within is not None and within not in out:
            out.append(within)
        if "external-source" in probes:
            ext = probes["external-source"]["dataset"]
            if ext != cell.dataset and ext not in external.get(cell, []):
                external = {**external, cell: external.get(cell, []) + [ext]}
    return out, external


def expand_cross_dataset(c: _Checker, cells: list[CellKey], external: dict, datasets, kind: str):
    """A protocol whose strategy crosses data sets: every cell's models also predict every other data set of the
    suite (each ordered pair trained-on A, tested-on B). Whether B holds A's positive class is checked
    when the sample tables are read (benchbox/define/plan.py), since only then are the classes known."""
    trained = list(dict.fromkeys(cell.dataset for cell in cells))
    if len(datasets) < 2:
        c.add("protocol.kind", f'"{kind}" needs at least two [datasets.*] tables (train on one, test on another)')
        return cells, external
    if not trained:
        return cells, external
    out = dict(external)
    for cell in cells:
        others = [a for a in datasets if a != cell.dataset]
        out[cell] = list(out.get(cell, [])) + [a for a in others if a not in out.get(cell, [])]
    return cells, out


def _resolve_path(value, suite_path):
    """A relative weights path is tried against the working directory, then the suite's folder."""
    if not isinstance(value, str) or value.lower() in ("imagenet", "none"):
        return value
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists():
        return str(path)
    beside = Path(suite_path).parent / path
    return str(beside.resolve()) if beside.exists() else value


def _cells(c: _Checker, raw, datasets, backbones):
    """Dataset x backbone pairs (every pairing, unless [[experiments]] names them), and the
    test-only data sets each pair's fold models are also evaluated on (``external``)."""
    experiments = raw.get("experiments")
    if experiments is None:
        return [CellKey(d, b) for d in datasets for b in backbones], {}
    cells, external = [], {}
    for i, exp in enumerate(experiments if isinstance(experiments, list) else []):
        where = f"experiments[{i}]"
        if not isinstance(exp, dict):
            c.add(where, "must be a table with datasets = [...] and backbones = [...]")
            continue
        c.keys(where, exp, {"datasets", "backbones", "external"})
        lists = {}
        for key, known in (("datasets", datasets), ("backbones", backbones)):
            names = exp.get(key)
            if not isinstance(names, list) or not names:
                c.add(f"{where}.{key}", f"required: a non-empty list of names from [{key}.*]: {', '.join(known)}")
                names = []
            for name in names:
                if name not in known:
                    c.add(f"{where}.{key}", f"unknown name {name!r}; defined: {', '.join(known) or 'none'}")
            lists[key] = [n for n in names if n in known]
        ext = exp.get("external", [])
        if not isinstance(ext, list):
            c.add(f"{where}.external", "must be a list of names from [datasets.*] (test-only data sets)")
            ext = []
        for name in ext:
            if name not in datasets:
                c.add(f"{where}.external", f"unknown name {name!r}; defined: {', '.join(datasets) or 'none'}")
            elif name in lists.get("datasets", []):
                c.add(
                    f"{where}.external",
                    f"{name!r} is also trained on in this experiment; an external "
                    "data set must never be seen in training",
                )
        for d in lists.get("datasets", []):
            for b in lists.get("backbones", []):
                cell = CellKey(d, b)
                if cell not in cells:
                    cells.append(cell)
                external.setdefault(cell, [])
                external[cell] += [
                    n for n in ext if n in datasets and n not in lists["datasets"] and n not in external[cell]
                ]
    return cells, {k: v for k, v in external.items() if v}
