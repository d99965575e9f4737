"""How `benchbox board build` and `benchbox leaderboard` scale with the number of entries.

Generates N bundles (default up to 500) of 60 fold records each (6 x 10-fold CV of 300 images, 3
classes): runs written the way `benchbox run` writes them (records, splits, manifest with record
digests), then bundled with `benchbox bundle`'s code. Entries are spread over 5 data sets (5 paired
groups) with 1 backbone per entry, so the board has paired groups, ties and a critical-difference
diagram. Then, for 100, 250 and 500 entries, side by side (seconds, wall clock, this process):

- records alone: open every bundle (extract, check member digests) and read its fold records;
- leaderboard: the same, re-score every entry through its evaluators, rank, paired tests (what
  `benchbox leaderboard BUNDLES...` does before rendering);
- board build: all of that, and the static site (one page per group and per entry, heat maps,
  critical-difference diagram, reliability diagrams).

    python benchmarks/leaderboard_scale.py                     # 100, 250, 500 entries
    python benchmarks/leaderboard_scale.py --sizes 20 --keep /tmp/board   # a quick look

The evaluators are "paper" (Wilson intervals) and "calibration" (Brier, ECE): the "clinical"
evaluator's patient bootstrap (1000 resamples per entry) is left out, and its cost is printed
separately for a few entries (--clinical-sample).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tomllib

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

from benchbox.define.suite import raw_digest  # noqa: E402
from benchbox.execute.records import CellKey, FoldRecord  # noqa: E402
from benchbox.execute.store import (  # noqa: E402
    DIGESTS,
    FORMAT,
    RunStore,
    json_text,
    sha256_digest,
    split_fingerprint,
    write_json,
)

CLASSES = ["covid", "normal", "pneumonia"]
IMAGES, K, REPEATS = 300, 10, 6
DATASETS = 5


def make_run(path: Path, entry: int, evaluators: list[str]) -> Path:
    """One run directory of one cell: ``entry`` picks its data set and its backbone's skill."""
    rng = np.random.default_rng(entry)
    data = entry % DATASETS
    store = RunStore(path)
    ids = [f"d{data}-img{i:04d}" for i in range(IMAGES)]
    y = np.arange(IMAGES) % 3
    label = f"{REPEATS}x{K}-fold (stratified)"
    folds = np.stack(
        [np.random.default_rng([data, r]).permutation(np.arange(IMAGES) % K) + r * K for r in range(REPEATS)]
    )
    suite = f'name = "scale{entry}"\nseed = 1\n[protocol]\nk = {K}\nrepeats = {REPEATS}\n'
    suite_digest = raw_digest(tomllib.loads(suite))
    backbone = f"net{entry // DATASETS:03d}"
    skill = 0.5 + 2.0 * np.random.default_rng(entry // DATASETS).random()  # the same backbone on every data set
    digests = {}
    (path / "folds").mkdir(parents=True)
    for f in range(K * REPEATS):
        row = folds[f // K]
        idx = np.flatnonzero(row == f)
        logits = rng.normal(0, 1, (len(idx), 3))
        logits[np.arange(len(idx)), y[idx]] += skill
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        rec = FoldRecord(
            cell=CellKey(f"data{data}", backbone),
            fold=f,
            seed=f,
            classes=CLASSES,
            test_ids=[ids[i] for i in idx],
            y_true=y[idx],
            probabilities=probs,
            test_groups=[ids[i] for i in idx],
            test_sources=["a"] * len(idx),
            n_train=IMAGES - len(idx),
            train_seconds=1.0,
            predict_seconds=0.1,
            infer_images_per_sec=100.0,
            suite_digest=suite_digest,
        )
        text = json_text(rec.to_json()).encode()
        p = store.record_path(rec.cell, f)
        p.write_bytes(text)  # as write_record writes it, without its fsync (generating is not what is timed)
        digests[store.member_name(p)] = sha256_digest(text)
    store.write_split(f"data{data}", ids, folds, label)
    (path / "suite.toml").write_text(suite)
    write_json(
        store.manifest_path,
        {
            "format": FORMAT,
            "suite": f"scale{entry}",
            "suite_digest": suite_digest,
            "status": "complete",
            "seed": 1,
            "started_at": f"2026-12-07T00:00:{entry:04d}",
            "evaluators": evaluators,
            "protocol": {"kind": "kfold", "k": K, "repeats": REPEATS, "stratified": True, "grouped": False},
            "protocol_label": label,
            "datasets": {
                f"data{data}": {
                    "dataset": f"data{data}",
                    "plugin": "generated",
                    "classes": CLASSES,
                    "positive_class": "covid",
                    "class_counts": dict.fromkeys(CLASSES, IMAGES // 3),
                    "fingerprint": f"sha256:generated-{data}",
                    "split_fingerprint": split_fingerprint(ids, folds, label),
                }
            },
            "cells": [
                {
                    "dataset": f"data{data}",
                    "probe": "",
                    "backbone": backbone,
                    "plugin": f"gen/{backbone}",
                    "framework": "none",
                    "folds": K * REPEATS,
                    "options": {"input_size": [64, 64]},
                }
            ],
            "environment": {"cpu": "generated", "benchbox": "bench"},
            DIGESTS: digests,
        },
    )
    return path


def generate(n: int, where: Path, evaluators: list[str], registry) -> list[Path]:
    from benchbox.results.bundle import write_bundle

    bundles = []
    for i in range(n):
        run = make_run(where / "runs" / f"run{i:04d}", i, evaluators)
        out = where / "bundles" / f"run{i:04d}.bbx.zip"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_bundle(run, out, registry)
        shutil.rmtree(run)
        bundles.append(out)
    return bundles


def time_records_alone(bundles) -> float:
    from benchbox.results.bundle import each_opened

    t = time.perf_counter()
    n, problems = 0, []
    for _, run_dir in each_opened(bundles, problems):
        n += len(RunStore(run_dir).read_records()[0])
    assert not problems and n == len(bundles) * K * REPEATS, (problems, n)
    return time.perf_counter() - t


def time_leaderboard(bundles, registry, jobs=None) -> float:
    from benchbox.results.views.leaderboard import choose_metric, collect_sources, rank, render_markdown

    t = time.perf_counter()
    entries, _, metrics = collect_sources(bundles, registry, jobs=jobs)
    spec = choose_metric(metrics, None)
    render_markdown(rank(entries, spec), spec)
    return time.perf_counter() - t


def time_board(board: Path, site: Path, registry, jobs=None) -> float:
    from benchbox.results.board import build

    t = time.perf_counter()
    build(board, site, registry, jobs=jobs)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 250, 500])
    parser.add_argument("--keep", type=Path, help="build the board and site here and keep them")
    parser.add_argument("--jobs", type=int, help="worker processes (default: the cores free at the start)")
    parser.add_argument("--serial", action="store_true", help="also time the leaderboard with 1 process")
    parser.add_argument("--clinical-sample", type=int, default=5, help="entries to time the clinical evaluator on")
    args = parser.parse_args()
    from benchbox.plugins import load_registry

    registry = load_registry()
    where = args.keep or Path(tempfile.mkdtemp(prefix="bbx-scale-"))
    where.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    bundles = generate(max(args.sizes), where, ["paper", "calibration"], registry)
    size = sum(b.stat().st_size for b in bundles) / len(bundles)
    print(f"generated {len(bundles)} bundles x {K * REPEATS} folds ({size / 1024:.0f} KiB each) in "
          f"{time.perf_counter() - t:.1f} s", flush=True)  # fmt: skip
    from benchbox.execute.environment import auto_threads

    jobs = args.jobs or auto_threads()["threads"]
    serial = f" {'leaderboard, 1 process':>12}" if args.serial else ""
    print(f"seconds; leaderboard and board build re-score with {jobs} worker process(es); load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")  # fmt: skip
    print(f"{'entries':>8} {'records alone':>14} {'leaderboard':>12} {'board build':>12}{serial}", flush=True)
    for n in args.sizes:
        board = where / f"board{n}"
        (board / "entries").mkdir(parents=True, exist_ok=True)
        (board / "board.json").write_text('{"format": "benchbox-board/1"}\n')
        for b in bundles[:n]:  # `board add` verifies each; here the timed part is the build
            shutil.copy(b, board / "entries" / b.name)
        alone = time_records_alone(bundles[:n])
        lb = time_leaderboard(bundles[:n], registry, jobs=jobs)
        built = time_board(board, where / f"site{n}", registry, jobs=jobs)
        one = f"{time_leaderboard(bundles[:n], registry, jobs=1):>12.1f}" if args.serial else ""
        print(f"{n:>8} {alone:>14.1f} {lb:>12.1f} {built:>12.1f} {one}", flush=True)
    if args.clinical_sample:
        few = generate(args.clinical_sample, where / "clinical", ["paper", "calibration", "clinical"], registry)
        t_with = time_leaderboard(few, registry)
        t_without = time_leaderboard(bundles[: args.clinical_sample], registry)
        per = (t_with - t_without) / args.clinical_sample
        print(f"the clinical evaluator (AUC, macro F1, 1000-resample patient bootstrap) adds {per:.2f} s per entry")
    if args.keep is None:
        shutil.rmtree(where)


if __name__ == "__main__":
    main()
