"""Leaderboards across runs: collect run directories (any suites, machines, dates), rank
entries (data set x backbone) by any metric an evaluator declared, with its interval, and show
provenance. Entries whose data set composition, protocol or input size differ are never ranked
together: each comparable group gets its own ranking. A run that cannot be read is skipped with
a warning; the others are still ranked.

A cross-dataset run adds one entry per backbone x ordered pair (trained on A, tested on B, A != B),
each pair its own ranking group: a model's figure on B is comparable with other models' figures on B
after training on A, not with anyone's cross-validation on A (those stay the run's ordinary entries).
Such entries carry the metrics of the run's matrix only (``SplitStrategy.matrix_metrics``; cross-dataset:
AUC, sensitivity and specificity, positive class vs rest); ranked by another metric they are left out."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
import pandas as pd

from benchbox.contracts import MetricSpec
from benchbox.errors import BenchboxError
from benchbox.execute.environment import THREAD_VARIABLES, busy
from benchbox.execute.records import cell_index, data_index
from benchbox.execute.store import RunStore
from benchbox.results.summary import summarise
from benchbox.results.views.format import md_escape, short_fingerprint, value


def collect(
    run_dirs, registry, dataset: str | None = None, sources=None, problems: list[str] | None = None, pairs=None
) -> tuple[pd.DataFrame, list[str], dict[str, MetricSpec]]:
    """One row per entry of every run, the problems met, and every metric the runs declare.

    ``sources``: what each run directory came from (a bundle extracted into ``run_dirs[i]``): entries and
    messages name it; ``pairs``: (source, run directory) pairs instead of both, read in turn (a generator
    that extracts each bundle only while it is read, ``benchbox.results.bundle.each_opened``);
    ``problems``: the list to add problems to (it may already hold some)."""
    rows, metrics = [], {}
    problems = problems if problems is not None else []
    seen_datasets: set[str] = set()
    if pairs is None:
        pairs = zip(sources, run_dirs) if sources is not None else ((d, d) for d in run_dirs)
    collect_into(pairs, registry, dataset, rows, problems, metrics, seen_datasets)
    return _finish(rows, problems, metrics, dataset, seen_datasets)


#: the registry the worker processes of ``collect_sources`` use (inherited through fork)
_WORKER: dict = {}


def _collect_one(source) -> tuple[list, list, dict, set]:
    """The entries of one source (run directory or bundle), in a worker process."""
    from benchbox.results.bundle import each_opened

    rows, problems, metrics, seen = [], [], {}, set()
    collect_into(
        each_opened([source], problems), _WORKER["registry"], _WORKER["dataset"], rows, problems, metrics, seen
    )
    return rows, problems, metrics, seen


def collect_into(pairs, registry, dataset, rows, problems, metrics, seen_datasets) -> None:
    for source, run_dir in pairs:
        first_row, first_problem = len(rows), len(problems)
        try:
            _entries_of(run_dir, registry, dataset, rows, problems, metrics, seen_datasets)
        finally:
            if str(source) != str(run_dir):
                for row in rows[first_row:]:
                    row["run_dir"] = str(source)
                for i in range(first_problem, len(problems)):
                    problems[i] = problems[i].replace(str(run_dir), str(source))


def collect_sources(
    sources, registry, dataset: str | None = None, jobs: int | None = None
) -> tuple[pd.DataFrame, list[str], dict[str, MetricSpec]]:
    """``collect`` over run directories and/or bundles, each read (extracted, re-scored) in turn, by ``jobs``
    worker processes when there are many (default: the cores free now, as ``--threads auto`` counts them:
    on a busy machine extra processes only compete, measured in docs/performance.md); the same rows in the
    same order as one process gives."""
    import os

    from benchbox.execute.environment import auto_threads
    from benchbox.results.bundle import each_opened

    sources = list(sources)
    jobs = max(1, min(jobs or auto_threads()["threads"], len(sources) // 8 or 1))
    if jobs == 1 or not hasattr(os, "fork"):
        problems: list[str] = []
        return collect(None, registry, dataset, problems=problems, pairs=each_opened(sources, problems))
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    _WORKER.update(registry=registry, dataset=dataset)
    rows, problems, metrics, seen = [], [], {}, set()
    context = multiprocessing.get_context("fork")  # the workers inherit the registry (plugins loaded once)
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:
        for r, p, m, s in pool.map(_collect_one, sources, chunksize=max(1, len(sources) // (jobs * 4))):
            rows += r
            problems += p
            for name, spec in m.items():
                metrics.setdefault(name, spec)
            seen |= s
    _WORKER.clear()
    return _finish(rows, problems, metrics, dataset, seen)


def _finish(rows, problems, metrics, dataset, seen_datasets):
    if not rows:
        if dataset and seen_datasets:
            raise BenchboxError(
                f"--dataset {dataset!r}: no entry of that data set in the runs given; their data sets: "
                f"{', '.join(sorted(seen_datasets))} (or name a dataset plugin)"
            )
        raise BenchboxError("no leaderboard entries: " + ("; ".join(problems) if problems else "no runs given"))
    return pd.DataFrame(rows), problems, metrics


def _entries_of(run_dir, registry, dataset, rows: list, problems: list, metrics: dict, seen_datasets: set) -> None:
    """Append the entries of one run directory to ``rows`` (and what went wrong to ``problems``)."""
    store = RunStore(run_dir)
    try:
        result = summarise(store, registry)
    except BenchboxError as exc:
        problems.append(str(exc))
        return
    except Exception as exc:  # one unreadable run must not hide the others
        problems.append(f"{run_dir}: cannot be read ({type(exc).__name__}: {exc}); skipped")
        return
    manifest = result.manifest
    problems += [f"{run_dir}: {p}" for p in result.problems]
    for spec in result.metrics:
        metrics.setdefault(spec.name, spec)
    env = manifest.get("environment", {})
    cells = cell_index(manifest)
    notes: dict = {}
    for section in result.sections:
        for cell, line in (section.annotations or {}).items():
            notes.setdefault(cell, []).append(line)
    by_cell = result.cells
    splits: dict = {}
    for _, r in result.summary.iterrows():
        cell = r["cell"]
        if cell.probe:  # a probe's cell qualifies its entry; it is not an entry itself
            continue
        dmeta = result.data_meta(cell)
        seen_datasets.add(cell.dataset)
        if dataset and cell.dataset != dataset and dmeta.get("plugin") != dataset:
            continue
        opts = cells.get(cell, {}).get("options", {})
        composition = f"{dmeta.get('plugin', cell.dataset)} " + ", ".join(
            f"{k} {v}" for k, v in sorted(dmeta.get("class_counts", {}).items())
        )
        size = "x".join(str(v) for v in opts.get("input_size", []))
        rows.append(
            {
                **{k: v for k, v in r.to_dict().items() if k != "cell"},
                "run": Path(run_dir).name,
                "run_dir": str(run_dir),
                "suite": manifest.get("suite"),
                "protocol": within_label(manifest, registry),
                "grouped": bool(manifest.get("protocol", {}).get("grouped")),
                "weights": opts.get("weights", ""),
                "input_size": size,
                "composition": composition,
                "hardware": ", ".join(env.get("gpus") or []) or env.get("cpu", ""),
                "date": manifest.get("started_at", ""),
                "benchbox": env.get("benchbox", ""),
                "notes": " | ".join(_completeness(r) + _degenerate(r) + notes.get(cell, []) + _busy_start(env)),
                "group": f"{composition} | {within_label(manifest, registry)} | input {size}"
                + scheme_suffix(r.get("scheme")),
                **pairing(store, cell, dmeta, by_cell.get(cell, []), splits, problems, bool(manifest.get("id_hash"))),
            }
        )
    crossed = _cross_entries(result, run_dir, dataset)
    if crossed:
        for spec in result.cross_metrics:  # the matrix's own, whatever evaluators the suite listed
            metrics.setdefault(spec.name, spec)
    rows += crossed


def pairing(store: RunStore, cell, dmeta: dict, records, splits: dict, problems: list[str], hashed=False) -> dict:
    """What pairs an entry with another: its data and split fingerprints, and its folds' numbers and
    mean training and test set sizes (for the corrected resampled t-test). The split fingerprint is
    computed from the run's stored split (splits/<data>.json), so runs written before fingerprints
    were recorded pair too; where the run stores none, the manifest's is used."""
    slug = cell.data.slug
    if slug not in splits:
        try:
            own = store.split_fingerprint(slug) or dmeta.get("split_fingerprint") or ""
            splits[slug] = (own, own if hashed else hashed_split_fingerprint(store, slug) or own)
        except (BenchboxError, ValueError, TypeError) as exc:
            problems.append(f"{store.path}: the split of {cell.label} cannot be fingerprinted ({exc}); not paired")
            splits[slug] = ("", "")
    return {
        "data_fingerprint": str(dmeta.get("fingerprint") or ""),
        "split_fingerprint": splits[slug][0],
        "split_key": splits[slug][1],
        "fold_numbers": [int(r.fold) for r in records],
        "fold_n_train": float(np.mean([r.n_train for r in records])) if records else float("nan"),
        "fold_n_test": float(np.mean([r.n_test for r in records])) if records else float("nan"),
        "pooled": pooled_out_of_fold(records, dmeta.get("positive_class"), hashed),
    }


def hashed_split_fingerprint(store: RunStore, slug: str) -> str:
    """The split fingerprint the run's split would have in a bundle made with --hash-ids: entries pair on
    it, so a bundle with hashed ids pairs with a run (or bundle) of the same images and folds that kept them."""
    from benchbox.execute.store import split_fingerprint
    from benchbox.results.verify import hash_id

    data = store.read_split(slug)
    if not data:
        return ""
    return split_fingerprint([hash_id(i) for i in data["ids"]], data["fold"], str(data.get("protocol") or ""))


def pooled_out_of_fold(records, positive_class, hashed: bool = True) -> dict:
    """Each test image's out-of-fold prediction, sorted by id: ``ids``, ``positive`` (is of the positive
    class), ``score`` (the positive class's probability) and ``correct`` (top-1). Under repeated CV an
    image is tested once per repeat: the lowest-numbered fold's prediction (the first repeat) counts, so
    every image counts once, as DeLong's and McNemar's tests assume. Ids are in their hashed form
    (``hashed``: they are already), so that entries of bundles with and without --hash-ids match."""
    from benchbox.results.verify import hash_id

    first: dict = {}
    named: dict = {}  # id -> its hash (an image is tested once per repeat)
    for r in sorted(records, key=lambda r: r.fold):
        classes = list(r.classes)
        pos = classes.index(positive_class) if positive_class in classes else 0
        probs = np.asarray(r.probabilities, dtype=float)
        predicted = probs.argmax(axis=1) if probs.ndim == 2 and len(probs) else np.zeros(0, int)
        for j, i in enumerate(
            r.test_ids if hashed else (named.get(i) or named.setdefault(i, hash_id(i)) for i in r.test_ids)
        ):
            if i not in first:
                y = int(r.y_true[j])
                first[i] = (y == pos, float(probs[j, pos]), bool(predicted[j] == y))
    ids = sorted(first)
    return {
        "ids": ids,
        "positive": [first[i][0] for i in ids],
        "score": [first[i][1] for i in ids],
        "correct": [first[i][2] for i in ids],
    }


def pooled_test(best: dict, other: dict, kind: str) -> tuple[float, str]:
    """The paired test a metric declares (``MetricSpec.paired_test``) on two entries' pooled out-of-fold
    predictions of the same images: (two-sided p, what was done) or (nan, why not)."""
    from benchbox.results.pairstats import delong_test, mcnemar_exact

    a, b = best.get("pooled"), other.get("pooled")
    if not kind or not isinstance(a, dict) or not isinstance(b, dict):
        return float("nan"), ""
    if a["ids"] != b["ids"] or not a["ids"]:
        return float("nan"), "the entries tested other images: no pooled test"
    if kind == "auc":
        if len(set(a["positive"])) < 2:
            return float("nan"), "one class only among the images: no DeLong test"
        return delong_test(a["positive"], a["score"], b["score"])["p_value"], f"DeLong over {len(a['ids'])} images"
    if kind == "accuracy":
        return mcnemar_exact(a["correct"], b["correct"])["p_value"], f"exact McNemar over {len(a['ids'])} images"
    return float("nan"), f"unknown paired test {kind!r}"


def within_label(manifest: dict, registry) -> str:
    """The protocol of a run's ordinary (within-data-set) entries, as its split strategy names it: a
    cross-dataset run's are its k-fold cross-validation, computed exactly as a k-fold run's, so they are
    ranked together with those. A strategy no longer installed: the label the run stored."""
    protocol = manifest.get("protocol") or {}
    entry = registry.split_strategies.get(protocol.get("kind"))
    if entry is None:
        return manifest.get("protocol_label")
    defaults = entry.obj.defaults or {}
    return entry.obj.within_label({k: protocol.get(k, v) for k, v in defaults.items()})


def _cross_entries(result, run_dir, dataset: str | None) -> list[dict]:
    """The off-diagonal cells of a cross-dataset run's matrix as entries (the diagonal is the run's
    ordinary entry)."""
    cross = getattr(result, "cross", None)
    if cross is None or not len(cross):
        return []
    ordinary = {}
    for _, r in result.summary.iterrows():
        if not r["cell"].probe:
            ordinary[(r["dataset"], r["backbone"])] = r
    manifest, env = result.manifest, result.manifest.get("environment", {})
    cells = cell_index(manifest)
    carried = [spec.name for spec in result.cross_metrics]
    out = []
    for _, x in cross[cross["trained_on"] != cross["tested_on"]].iterrows():
        a, b, backbone = x["trained_on"], x["tested_on"], x["backbone"]
        if dataset and dataset not in (a, b):
            continue
        own = ordinary.get((a, backbone))
        cell = next((c for c in cells if c.dataset == a and c.backbone == backbone and not c.probe), None)
        opts = cells.get(cell, {}).get("options", {}) if cell is not None else {}
        size = "x".join(str(v) for v in opts.get("input_size", []))
        comp = {}
        for name in (a, b):
            meta = next((m for k, m in data_index(manifest).items() if k.dataset == name and not k.probe), {})
            comp[name] = f"{meta.get('plugin', name)} " + ", ".join(
                f"{k} {v}" for k, v in sorted((meta.get("class_counts") or {}).items())
            )
        out.append(
            {
                **{k: x[k] for k in x.index if k in carried or any(k.startswith(m + "_") for m in carried)},
                "crossed": True,
                "crossed_metrics": carried,  # what it can be ranked by (a list: left out of CSV and JSON)
                "dataset": a,
                "data": f"{a} → {b}",
                "tested_on": b,
                "backbone": backbone,
                "plugin": own["plugin"] if own is not None else "",
                "framework": own["framework"] if own is not None else "",
                "folds": x["models"],
                "run": Path(run_dir).name,
                "run_dir": str(run_dir),
                "suite": manifest.get("suite"),
                "protocol": manifest.get("protocol_label"),
                "grouped": bool(manifest.get("protocol", {}).get("grouped")),
                "weights": opts.get("weights", ""),
                "input_size": size,
                "composition": f"{comp[a]} → {comp[b]}",
                "hardware": ", ".join(env.get("gpus") or []) or env.get("cpu", ""),
                "date": manifest.get("started_at", ""),
                "benchbox": env.get("benchbox", ""),
                "notes": f"cross-dataset: trained on {a}, tested on all of {b} ({x['how']}; "
                f"positive class {x['positive_class']})",
                # named by the suite's aliases; the compositions (plugin, class counts) keep apart runs
                # whose aliases name different data, as a detail at the end
                "group": f"cross-dataset: trained on {a} → tested on {b} | {manifest.get('protocol_label')} | "
                f"input {size} | {a}: {comp[a]}; {b}: {comp[b]}"
                + scheme_suffix(own.get("scheme") if own is not None else None),
                "scheme": (own.get("scheme") if own is not None else None) or "fine-tune",
            }
        )
    return out


def scheme_suffix(scheme) -> str:
    """Entries of a frozen scheme rank in groups of their own: a probe never ranks against a fine-tune.
    Fine-tuned entries keep the group name they always had (runs from before schemes included)."""
    return f" | scheme {scheme}" if isinstance(scheme, str) and scheme not in ("", "fine-tune") else ""


def scheme_note(scheme) -> str:
    return f", {scheme}" if isinstance(scheme, str) and scheme not in ("", "fine-tune") else ""


def _busy_start(env: dict) -> list[str]:
    """A run started on a busy machine with default thread pools: its timings are not comparable."""
    load, cores = env.get("load_average"), int(env.get("cpu_count") or 1)
    threads_set = any(name in (env.get("settings") or {}) for name in THREAD_VARIABLES)
    if not busy(load, cores, threads_set):
        return []
    return [f"started on a busy machine (load {load:g}, {cores} cores): its timings are not comparable"]


def _degenerate(row) -> list[str]:
    """A model that predicts one class for every test image is ranked, but its figures measure that
    class's share, not skill: the entry says so."""
    said = row.get("degenerate")
    return [f"degenerate model: it {said}"] if isinstance(said, str) and said else []


def _completeness(row) -> list[str]:
    """A note for an entry whose run did not finish every fold: it is ranked, but not as a whole result."""
    expected = row.get("folds_expected")
    if isinstance(expected, (int, float)) and not pd.isna(expected) and row.get("folds", 0) < expected:
        return [f"incomplete: {row['folds']}/{int(expected)} folds"]
    return []


def rank(entries: pd.DataFrame, spec: MetricSpec) -> pd.DataFrame:
    """Rank within each comparable group, best first (as the metric declares); no value: last, unranked."""
    if spec.name not in entries.columns:
        raise BenchboxError(f"no run computed {spec.name!r} (add the evaluator that does to the suite)")
    left_out, carried = 0, []
    if "crossed" in entries.columns:
        crossed = entries["crossed"].fillna(False).astype(bool)
        carries = entries.get("crossed_metrics", pd.Series([None] * len(entries), index=entries.index))
        lacking = crossed & ~carries.map(lambda names: isinstance(names, list) and spec.name in names)
        carried = list(dict.fromkeys(n for names in carries[lacking] for n in names or []))
        left_out, entries = int(lacking.sum()), entries[~lacking]
        if entries.empty:
            raise BenchboxError(
                f"only cross-dataset entries, which carry {', '.join(carried) or 'no metric'}"
                + (f": rank them with --metric {carried[0]}" if carried else "")
            )
    out = []
    for _, sub in entries.groupby("group", sort=True):
        shown = pd.to_numeric(sub[spec.name], errors="coerce").map(lambda v: displayed(v, spec))
        # best first; within a tie (the same value as displayed) by backbone, then run: a stable order
        # that says nothing about which is better
        sub = sub.assign(_v=shown, _b=sub["backbone"].astype(str), _r=sub["run"].astype(str))
        sub = sub.sort_values(
            ["_v", "_b", "_r"], ascending=[not spec.higher_is_better, True, True], na_position="last", kind="stable"
        )
        sub["rank"] = competition_ranks(list(sub["_v"]))
        out.append(paired_tests(sub.drop(columns=["_v", "_b", "_r"]), spec))
    ranked = pd.concat(out, ignore_index=True)
    ranked.attrs["cross_left_out"], ranked.attrs["cross_carried"] = left_out, carried
    return ranked


#: significance level of the paired tests: an entry whose Holm-adjusted p against the best is at least
#: this is "tied with" the best
ALPHA = 0.05


def paired_key(row) -> str:
    """The paired group of an entry: its data and split fingerprints (short form; the split's with its ids
    hashed, so bundles with and without --hash-ids pair); "" when it lacks one."""
    data, split = row.get("data_fingerprint"), row.get("split_key") or row.get("split_fingerprint")
    if not isinstance(data, str) or not data or not isinstance(split, str) or not split:
        return ""
    return f"data {short_fingerprint(data, 8)} · split {short_fingerprint(split, 8)}"


def format_p(p) -> str:
    """A p-value as tables show it: three decimals, "< 0.001" below that, "n/a" when there is none."""
    if p is None or pd.isna(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def fold_ttest(best, other, spec: MetricSpec) -> tuple[float, str]:
    """The corrected resampled t-test of ``spec`` between two entries of one paired group over their
    common folds: (two-sided p, what was done) or (nan, why no test was made)."""
    from benchbox.results.pairstats import corrected_resampled_ttest

    values = []
    for row in (best, other):
        v, folds = row.get(f"{spec.name}_folds"), row.get("fold_numbers")
        if not isinstance(v, list) or not isinstance(folds, list) or len(v) != len(folds) or not v:
            return float("nan"), f"no per-fold values of {spec.label}: no paired test"
        values.append(dict(zip(folds, v)))
    if set(values[0]) != set(values[1]):
        return float("nan"), "the entries finished different folds: no paired test"
    common = [f for f in sorted(values[0]) if not pd.isna(values[0][f]) and not pd.isna(values[1][f])]
    if len(common) < 2:
        return float("nan"), f"fewer than 2 folds where both have a {spec.label}: no paired test"
    n_train = np.nanmean([best.get("fold_n_train", np.nan), other.get("fold_n_train", np.nan)])
    n_test = np.nanmean([best.get("fold_n_test", np.nan), other.get("fold_n_test", np.nan)])
    if not (n_train > 0 and n_test > 0):
        return float("nan"), "the folds' training and test set sizes are unknown: no paired test"
    test = corrected_resampled_ttest([values[0][f] - values[1][f] for f in common], n_train, n_test)
    return test["p_value"], f"corrected resampled t-test over {len(common)} folds"


def paired_tests(sub: pd.DataFrame, spec: MetricSpec, alpha: float = ALPHA) -> pd.DataFrame:
    """Within one comparable group (sorted best first, ranked): entries with equal data and split
    fingerprints form a paired group; each is compared with the group's best by the corrected resampled
    t-test over their per-fold values and, where the metric declares one (``MetricSpec.paired_test``), by
    DeLong's test (AUC) or exact McNemar (accuracy) on their pooled out-of-fold predictions; each test's
    p-values are Holm-adjusted across the group's comparisons. The t-test decides ties where it could
    be made (it accounts for the training sets' variation), the pooled test otherwise. Adds
    ``paired_group``, ``paired_p`` (Holm-adjusted), ``paired_p_raw``, ``paired_test``, ``pooled_p``
    (Holm-adjusted), ``pooled_test`` and ``paired_rank`` (e.g. "1 (tied with 2, 3)": the best and the
    entries no test distinguishes from it)."""
    from benchbox.results.pairstats import holm

    sub = sub.reset_index(drop=True)
    rows = [r.to_dict() for _, r in sub.iterrows()]
    keys = [paired_key(r) for r in rows]
    p_adj, p_raw = [float("nan")] * len(rows), [float("nan")] * len(rows)
    q_adj = [float("nan")] * len(rows)
    tests, pooled = [""] * len(rows), [""] * len(rows)
    shown = ["" if pd.isna(r.get("rank")) else str(int(r["rank"])) for r in rows]
    for key in dict.fromkeys(k for k in keys if k):
        members = [i for i, k in enumerate(keys) if k == key and shown[i]]  # ranked: a value to compare
        if len(members) < 2:
            continue
        best, others = members[0], members[1:]
        tests[best] = "best of its paired group"
        q_raw = {}
        for i in others:
            p_raw[i], tests[i] = fold_ttest(rows[best], rows[i], spec)
            q_raw[i], pooled[i] = pooled_test(rows[best], rows[i], getattr(spec, "paired_test", ""))
        adjusted = holm([p_raw[i] for i in others])
        adjusted_q = holm([q_raw[i] for i in others])
        tied = []
        for i, p, q in zip(others, adjusted, adjusted_q):
            p_adj[i], q_adj[i] = float(p), float(q)
            deciding = p if not np.isnan(p) else q
            if not np.isnan(deciding) and deciding >= alpha:
                tied.append(i)
                shown[i] = f"{shown[i]} (tied with {shown[best]})"
        if tied:
            shown[best] = f"{shown[best]} (tied with {', '.join(shown[i].split(' ')[0] for i in tied)})"
    return sub.assign(
        paired_group=keys,
        paired_p=p_adj,
        paired_p_raw=p_raw,
        paired_test=tests,
        pooled_p=q_adj,
        pooled_test=pooled,
        paired_rank=shown,
    )


def displayed(v, spec: MetricSpec) -> float:
    """A metric's value as the leaderboard shows it (scaled, rounded to the declared digits): entries are
    compared at this precision, so two entries that read the same share a rank. NaN when undefined."""
    if v is None or pd.isna(v):
        return float("nan")
    return float(f"{spec.scale * float(v):.{spec.digits}f}")


def competition_ranks(values: list) -> list:
    """Standard competition ranking ("1224") of values already sorted best first: tied values share the
    rank of the first of them, the next value's rank counts every entry above it; NaN is unranked (None)."""
    ranks, previous, rank = [], None, 0
    for i, v in enumerate(values):
        if pd.isna(v):
            ranks.append(None)
            continue
        if previous is None or v != previous:
            rank, previous = i + 1, v
        ranks.append(rank)
    return ranks


def _cross_note(ranked: pd.DataFrame) -> str:
    n = ranked.attrs.get("cross_left_out", 0)
    if not n:
        return ""
    carried = ranked.attrs.get("cross_carried") or []
    return f"{n} cross-dataset entries (trained on one data set, tested on another) are " + (
        f"ranked by {', '.join(carried)} only: add --metric {carried[0]} to see them."
        if carried
        else "left out: their matrices have no metric."
    )


def choose_metric(metrics: dict[str, MetricSpec], name: str | None) -> MetricSpec:
    if not metrics:
        raise BenchboxError("the runs declare no metrics (their evaluators are not installed?)")
    if name is None:
        return next(iter(metrics.values()))
    if name not in metrics:
        raise BenchboxError(f"--metric {name!r}: the runs' evaluators declare {', '.join(metrics)}")
    return metrics[name]


COLUMNS = [
    "rank",
    "backbone",
    "framework",
    "value",
    "p vs best",
    "p pooled",
    "paired",
    "weights",
    "suite",
    "run",
    "grouped",
    "hardware",
    "date",
    "benchbox",
    "notes",
]


def paired_p_text(row) -> str:
    """The "p vs best" cell: "best", the Holm-adjusted p of the paired test, or why there is none."""
    test = row.get("paired_test")
    if not isinstance(test, str) or not test:
        return ""
    if test.startswith("best"):
        return "best"
    p = row.get("paired_p")
    return format_p(p) if p is not None and not pd.isna(p) else f"n/a ({test.split(':')[0]})"


def pooled_p_text(row) -> str:
    """The "p pooled" cell: the Holm-adjusted p of DeLong's or McNemar's test against the best, and which."""
    test = row.get("pooled_test")
    if not isinstance(test, str) or not test:
        return ""
    p = row.get("pooled_p")
    if p is None or pd.isna(p):
        return f"n/a ({test.split(':')[0]})"
    return f"{format_p(p)} ({test.split(' over ')[0]})"


def table_rows(ranked: pd.DataFrame, spec: MetricSpec):
    for group, sub in ranked.groupby("group", sort=False):
        yield (
            group,
            [
                {
                    "rank": r.get("paired_rank") or ("" if pd.isna(r["rank"]) else int(r["rank"])),
                    "backbone": f"{r['backbone']} ({r['plugin']}{scheme_note(r.get('scheme'))})",
                    "framework": r["framework"],
                    "value": value(r.to_dict(), spec, spread=False),
                    "p vs best": paired_p_text(r),
                    "p pooled": pooled_p_text(r),
                    "paired": r.get("paired_group") or "",
                    "weights": r["weights"],
                    "suite": r["suite"],
                    "run": r["run"],
                    "grouped": "yes" if r["grouped"] else "no",
                    "hardware": r["hardware"],
                    "date": str(r["date"])[:16],
                    "benchbox": r["benchbox"],
                    "notes": r.get("notes", "") or "",
                    "run_dir": r["run_dir"],
                }
                for _, r in sub.iterrows()
            ],
        )


def flat_frame(ranked: pd.DataFrame) -> pd.DataFrame:
    """The ranked entries without their list- or dict-valued columns (for CSV and JSON)."""
    return ranked.drop(
        columns=[c for c in ranked.columns if ranked[c].map(lambda v: isinstance(v, (list, dict))).any()]
    )


def render_markdown(ranked: pd.DataFrame, spec: MetricSpec) -> str:
    from tabulate import tabulate

    title = f"{spec.label} {spec.unit}".strip()
    parts = [
        f"# benchbox leaderboard — {md_escape(title)}\n",
        "Entries are ranked only against entries with the same data set composition, protocol and input size.\n",
    ]
    if _cross_note(ranked):
        parts.append(md_escape(_cross_note(ranked)) + "\n")
    for group, rows in table_rows(ranked, spec):
        parts.append(f"## {md_escape(group)}\n")
        frame = pd.DataFrame(rows)[COLUMNS].map(md_escape)
        parts.append(tabulate(frame, headers="keys", tablefmt="github", showindex=False) + "\n")
    return "\n".join(parts)


def _embedded_plots(ranked: pd.DataFrame) -> list[tuple[str, str, tuple[int, int] | None]]:
    """(caption, base64 PNG, (width, height) in pixels or None) of every plot of the ranked runs."""
    out = []
    for run_dir in dict.fromkeys(ranked["run_dir"]):
        for png in sorted((Path(run_dir) / "plots").glob("*.png")):
            data = png.read_bytes()
            out.append((f"{Path(run_dir).name}: {png.stem}", base64.b64encode(data).decode(), png_size(data)))
    return out


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's header, None when it is not a PNG."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


#: plots sit side by side, each at most this wide (two to a row on a wide window); a wide plot (wider than
#: WIDE_PLOT or than 1.6 times its height, e.g. the per-fold panels, about 1375 x 374) gets a row of its own
#: at up to its natural width, so that its labels stay readable
SMALL_PLOT = 640
WIDE_PLOT = 900


def _figure(title: str, b64: str, size: tuple[int, int] | None) -> str:
    e = html.escape
    wide = size is not None and (size[0] > WIDE_PLOT or size[0] > 1.6 * size[1])
    dims = f" width='{size[0]}' height='{size[1]}'" if size else ""
    cls = "wide" if wide else "small"
    return (
        f"<figure class='{cls}'><img alt='{e(title)}'{dims} src='data:image/png;base64,{b64}'>"
        f"<figcaption>{e(title)}</figcaption></figure>"
    )


SORT_JS = """
document.querySelectorAll('table.lb th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0], rows = Array.from(body.rows);
    var asc = th.dataset.asc !== 'true'; th.dataset.asc = asc;
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v || a.cells[col].textContent, y = b.cells[col].dataset.v || b.cells[col].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def render_html(ranked: pd.DataFrame, spec: MetricSpec, output: Path | None = None) -> str:
    """One self-contained page: inline CSS and JS, plots embedded as data URIs, no network."""
    e = html.escape
    title = f"{spec.label} {spec.unit}".strip()
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>benchbox leaderboard — {e(title)}</title><style>",
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin-bottom:2em}"
        "th,td{border:1px solid #ccc;padding:4px 8px;font-size:14px}th{background:#f0f0f0;cursor:pointer}"
        "figure{margin:8px}figure.small{display:inline-block;vertical-align:top}"
        "figure.small img{max-width:min(100%," + str(SMALL_PLOT) + "px)}"
        "figure.wide{display:block}img{max-width:100%;height:auto}"
        "p.links{color:#555;font-size:13px}</style></head><body>",
        f"<h1>benchbox leaderboard — {e(title)}</h1>",
        f"<p>Ranked only against entries with the same data set composition, protocol and input size; "
        f"{'higher' if spec.higher_is_better else 'lower'} is better. Values: pooled over folds, with 95% "
        "intervals. Click a column to sort.</p>",
    ]
    if _cross_note(ranked):
        parts.append(f"<p>{e(_cross_note(ranked))}</p>")
    linked: list[str] = []  # the hrefs of run links
    unlinked = 0
    for group, rows in table_rows(ranked, spec):
        parts.append(f"<h2>{e(group)}</h2><table class='lb'><thead><tr>")
        parts += [f"<th>{e(c)}</th>" for c in COLUMNS]
        parts.append("</tr></thead><tbody>")
        for row in rows:
            cells = []
            for c in COLUMNS:
                text = e(str(row[c]))
                report = Path(row["run_dir"]) / "report.html"
                if c == "run" and report.exists():
                    href = report.resolve().as_uri() if output is None else _relative(report, output)
                    text = f"<a class='local' href='{e(href)}'>{text}</a>"
                    linked.append(href)
                elif c == "run":
                    unlinked += 1
                cells.append(f"<td data-v='{e(str(row[c]).split(' ')[0])}'>{text}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</tbody></table>")
    note = links_note(linked, unlinked, output)
    if note:
        parts.append(f"<p class='links'>{e(note)}</p>")
    plots = _embedded_plots(ranked)
    if plots:
        parts.append("<h2>Plots</h2>")
        parts += [_figure(t, b, size) for t, b, size in plots]
    parts.append(f"<script>{SORT_JS}</script></body></html>")
    return "\n".join(parts)


def links_note(linked: list[str], unlinked: int, output: Path | None) -> str:
    """What the page's run links (``linked``: their hrefs) are: the only parts of the page that are not
    inside it."""
    parts = []
    if linked:
        if output is None:
            parts.append(
                "The run links open each run's report.html on the machine that wrote this page (file:// "
                "addresses): they do not work anywhere else."
            )
        else:
            parts.append(
                f"The run links are local: they open each run's report.html at its path relative to this page "
                f"(e.g. {linked[0]}). Publish the run folders beside the page at the same relative "
                "paths to keep them working; published alone, the page keeps its tables and plots, and only "
                "these links break."
            )
    if unlinked:
        parts.append("Runs without a report.html are not linked (write one with `benchbox report RUN_DIR`).")
    return " ".join(parts)


def _relative(target: Path, page: Path) -> str:
    import os

    return os.path.relpath(target.resolve(), Path(page).resolve().parent)
