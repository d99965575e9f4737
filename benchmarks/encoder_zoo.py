"""Rank timm encoders by linear probe and kNN on the real Dataset_2 (../shared/data), cold and warm,
and fine-tune two of them side by side for the cost ratio.

    python benchmarks/encoder_zoo.py --data-dir ../shared/data [--encoders 20] [--size 224] \
        [--per-class 60] [--finetune resnet18,mobilenetv3_small_100] [--epochs 3]

Weights: RANDOM (weights = "none") by default, since no model hub is reachable from this project's
machines: the figures then measure cost (img/s, fit seconds, cache hits) and what random features give,
NOT which ImageNet encoder is best. With --weights imagenet (and the weights in timm's cache, or a network)
the same script ranks the pretrained encoders.

5-fold patient-grouped stratified CV; each encoder is two entries (scheme = "linear-probe" and "knn", k = 11)
sharing one embedding pass through the cache. "cold": a fresh, empty cache folder; "warm": the same suite
again with that cache (every feature a hit, and the encoders' inference times kept beside them: a warm run
runs no encoder). Threads: --threads auto (the default), as `benchbox run` chooses them: the free cores;
and the encoders' inference times are kept per thread count.

    --cache DIR       keep the embedding cache in DIR (default: a fresh temporary folder); with
    --warm-only       skip the cold run: DIR already holds the features (of an earlier run with --cache DIR)
    --compare-probe   after the warm run, in this process, on the same cached features: each probe fold fitted
                      by both probes back to back (the fit seconds of each under the same load), then the warm
                      suite with the probe as first written (GridSearchCV on all d features:
                      benchbox.execute.probe.fit_linear_probe_direct) on the float32 features as cached and on
                      float64 copies: both warm times, the largest difference in any probability and summary
                      metric, and every chosen C that differs
    --profile FILE    cProfile the (first) warm run into FILE
    --baseline-src DIR  after the warm run, the same warm suite run by the benchbox checkout in DIR (e.g. the
                      main branch's, /work/main) in a subprocess, on the same cache, then by this checkout
                      again in a subprocess: both wall times, back to back (process start-up included)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

#: common ImageNet families, small to base size (timm names)
ZOO = [
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenetv3_small_100",
    "mobilenetv3_large_100",
    "mobilenetv2_100",
    "efficientnet_b0",
    "efficientnet_b1",
    "densenet121",
    "convnext_atto",
    "convnext_femto",
    "convnext_tiny",
    "regnety_004",
    "regnetx_016",
    "ghostnet_100",
    "mnasnet_100",
    "vit_tiny_patch16_224",
    "vit_small_patch16_224",
    "deit_tiny_patch16_224",
    "deit_small_patch16_224",
    "swin_tiny_patch4_window7_224",
    "vit_base_patch16_224",
]


def suite_text(name, out, encoders, size, per_class, weights, finetune, epochs, batch):
    lines = [
        f'name = "{name}"',
        "seed = 26",
        f'output_dir = "{out}"',
        'evaluators = ["paper", "clinical"]',
        "[protocol]",
        'kind = "kfold"',
        "k = 5",
        "stratified = true",
        "grouped = true",
        "[training]",
        f"epochs = {epochs}",
        f"batch_size = {batch}",
        "[datasets.dataset_2]",
        'plugin = "dataset_2"',
        f"covid = {per_class}",
        f"bacterial = {max(1, per_class // 2)}",
        f"viral = {max(1, per_class // 2)}",
        f"normal = {per_class}",
    ]
    for enc in encoders:
        for scheme in ("linear-probe", "knn"):
            lines += [
                f"[backbones.{enc}-{scheme}]",
                f'plugin = "timm/{enc}"',
                f'weights = "{weights}"',
                f"input_size = [{size}, {size}]",
                f'scheme = "{scheme}"',
            ]
    for enc in finetune:
        lines += [
            f"[backbones.{enc}-fine-tune]",
            f'plugin = "timm/{enc}"',
            f'weights = "{weights}"',
            f"input_size = [{size}, {size}]",
            'freeze = "none"',
        ]
    return "\n".join(lines) + "\n"


def run(path, data_dir, profile=None):
    from benchbox.define.suite import load_suite
    from benchbox.execute.runner import run_suite
    from benchbox.execute.store import RunStore
    from benchbox.plugins import load_registry

    reg = load_registry()
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    t0 = time.perf_counter()
    result = run_suite(load_suite(path, reg), reg, data_dir=data_dir, new=True)
    seconds = time.perf_counter() - t0
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    records, _ = RunStore(result.run_dir).read_records()
    return result, records, seconds


def run_with_direct_probe(path, data_dir, float64=False):
    """The same suite with the linear probe as first written (GridSearchCV over all d features); with
    ``float64``, fed float64 copies of the cached float32 features (scikit-learn's lbfgs then computes its
    loss and gradient in float64, as the row-space probe does)."""
    from benchbox.execute import probe, schemes

    def direct(x, y, groups, class_weight, seed):
        return probe.fit_linear_probe_direct(x.astype("float64") if float64 else x, y, groups, class_weight, seed)

    fast = schemes.fit_linear_probe
    schemes.fit_linear_probe = direct
    try:
        return run(path, data_dir)
    finally:
        schemes.fit_linear_probe = fast


def subprocess_run_seconds(src, path, data_dir, threads="auto") -> float:
    """Wall time of ``run_suite`` on the suite by the benchbox checkout ``src``, in a fresh process."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom benchbox.define.suite import load_suite\nfrom benchbox.execute.runner import run_suite\n"
        "from benchbox.plugins import load_registry\nreg = load_registry()\n"
        "try:\n    from benchbox.execute.environment import choose_threads\n    choose_threads(sys.argv[3])\n"
        "except ImportError:\n    pass\n"
        "run_suite(load_suite(sys.argv[1], reg), reg, data_dir=sys.argv[2], new=True)\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{Path(src) / 'plugins'}"}
    args = [sys.executable, "-c", code, str(Path(path).resolve()), str(Path(data_dir).resolve()), str(threads)]
    t0 = time.perf_counter()  # cwd: the checkout (python -c puts the working directory first on sys.path)
    done = subprocess.run(args, env=env, capture_output=True, text=True, cwd=src)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"the run by {src} failed:\n{done.stderr[-2000:]}")
    return seconds


def interleaved_fit_seconds(path, data_dir) -> dict:
    """The warm suite once more, each probe fold fitted by both probes back to back on the same features (which
    goes first alternates), the row-space probe's model kept: the fit seconds of each under the same load."""
    from benchbox.execute import probe, schemes

    seconds = {"row-space": 0.0, "direct": 0.0, "folds": 0}

    def both(x, y, groups, class_weight, seed):
        order = [("row-space", probe.fit_linear_probe), ("direct", probe.fit_linear_probe_direct)]
        out = {}
        for name, fit in order[:: 1 if seconds["folds"] % 2 == 0 else -1]:
            t0 = time.perf_counter()
            out[name] = fit(x, y, groups, class_weight, seed)
            seconds[name] += time.perf_counter() - t0
        seconds["folds"] += 1
        return out["row-space"]

    fast = schemes.fit_linear_probe
    schemes.fit_linear_probe = both
    try:
        run(path, data_dir)
    finally:
        schemes.fit_linear_probe = fast
    return seconds


def probe_fit_seconds(recs) -> float:
    return sum(r.info.get("probe_fit_seconds", 0.0) for r in recs if r.info.get("scheme") == "linear-probe")


def compare_probes(label, new, new_recs, new_s, old, old_recs, old_s):
    """Print two warm runs side by side: times, and how far the probe's results moved."""
    import numpy as np

    print(
        f"warm run, {label}: {old_s:.1f} s, probe fits {probe_fit_seconds(old_recs):.1f} s | row-space probe: "
        f"{new_s:.1f} s, probe fits {probe_fit_seconds(new_recs):.1f} s "
        f"(x{probe_fit_seconds(old_recs) / max(probe_fit_seconds(new_recs), 1e-9):.1f})"
    )
    by_key = {(str(r.cell), r.fold): r for r in old_recs}
    worst_p, changed, folds = 0.0, [], 0
    for r in new_recs:
        o = by_key[(str(r.cell), r.fold)]
        worst_p = max(worst_p, float(np.abs(np.asarray(r.probabilities) - np.asarray(o.probabilities)).max()))
        if r.info.get("scheme") == "linear-probe":
            folds += 1
            if r.info.get("probe_C") != o.info.get("probe_C"):
                changed.append(f"{r.cell.backbone} fold {r.fold}: C {o.info.get('probe_C')} -> {r.info.get('probe_C')}")
    a = new.summary.set_index("backbone")
    b = old.summary.set_index("backbone")
    numeric = [c for c in a.columns if c in b.columns and a[c].dtype.kind == "f" and "seconds" not in c]
    numeric = [c for c in numeric if not any(t in c for t in ("per_sec", "images_per", "_s"))]
    diffs = (a[numeric] - b.loc[a.index, numeric]).abs().max()
    worst_metric = diffs.idxmax() if len(diffs.dropna()) else None
    print(f"  largest difference in any fold's probability: {worst_p:.2e}")
    if worst_metric is not None:
        print(
            f"  largest difference in a summary metric: {diffs.max():.2e} ({worst_metric}); over {len(numeric)} metrics"
        )
    print(
        f"  chosen C differs in {len(changed)} of {folds} probe folds" + (": " + "; ".join(changed) if changed else "")
    )


def per_backbone(result, records):
    rows = {}
    for _, r in result.summary.iterrows():
        recs = [x for x in records if x.cell == r["cell"]]
        cache = [x.info.get("embedding_cache", {}) for x in recs] + [
            x.info.get("embedding_cache_test", {}) for x in recs
        ]
        computed = sum(c.get("computed", 0) for c in cache)
        embed_s = sum(c.get("embed_seconds", 0.0) for c in cache)
        rows[r["backbone"]] = {
            "acc": r.get("accuracy_3class", r.get("accuracy")),
            "auc": r.get("auc"),
            "train_s": float(sum(x.train_seconds for x in recs)),
            "fit_s": float(sum(x.info.get("probe_fit_seconds", 0.0) for x in recs)),
            "computed": computed,
            "hits": sum(c.get("hits", 0) for c in cache),
            "embed_ips": computed / embed_s if embed_s > 0 else float("nan"),
            "infer_ips": float(r.get("infer_images_per_sec", float("nan"))),
        }
    return rows


def encoder_timings_taken(records) -> int:
    """Folds that ran their encoder to time it (the others read the time kept in the embedding cache)."""
    return sum(1 for r in records if str(r.info.get("timing", {}).get("encoder_timing", "")).startswith("timed"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--encoders", type=int, default=20, help="the first N of the documented list")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--per-class", type=int, default=60, help="covid and normal images; bacterial, viral: half")
    ap.add_argument("--weights", default="none", help='"none" (random, the default here) or "imagenet"')
    ap.add_argument("--finetune", default="resnet18,mobilenetv3_small_100")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--cache", help="embedding cache folder to keep (default: a fresh temporary one)")
    ap.add_argument("--warm-only", action="store_true", help="skip the cold run (--cache holds the features)")
    ap.add_argument("--compare-probe", action="store_true", help="also run warm with the direct probe; compare")
    ap.add_argument("--profile", help="cProfile the warm run into this file")
    ap.add_argument("--threads", default="auto", help="as benchbox run's --threads: auto (free cores) or N")
    ap.add_argument("--baseline-src", help="a benchbox checkout to run the same warm suite with, for comparison")
    args = ap.parse_args()
    if args.warm_only and not args.cache:
        ap.error("--warm-only needs --cache DIR (the folder of an earlier run's features)")
    encoders = ZOO[: args.encoders]
    finetune = [e for e in args.finetune.split(",") if e]
    work = Path(tempfile.mkdtemp(prefix="encoder-zoo-"))
    os.environ["BENCHBOX_CACHE"] = args.cache or str(work / "cache")  # a cold, empty cache unless --cache
    from benchbox.execute.environment import choose_threads

    threads = choose_threads(args.threads)  # before torch loads, as the CLI does
    probes = work / "zoo.toml"
    probes.write_text(
        suite_text("zoo", work / "runs", encoders, args.size, args.per_class, args.weights, [], 1, args.batch)
    )
    print(
        f"encoder zoo: {len(encoders)} timm encoders, weights = {args.weights!r}"
        f"{' (RANDOM: cost and random-feature figures, not an ImageNet ranking)' if args.weights == 'none' else ''}; "
        f"Dataset_2 at {args.size} px, 5-fold patient-grouped, cache {os.environ['BENCHBOX_CACHE']}; "
        f"threads {threads['threads']} ({threads['why']})"
    )
    if args.warm_only:
        cold, cold_recs, cold_s = None, None, float("nan")
    else:
        cold, cold_recs, cold_s = run(probes, args.data_dir)
    warm, warm_recs, warm_s = run(probes, args.data_dir, args.profile)
    if cold is None:
        cold, cold_recs = warm, warm_recs
    n_images = (
        len(cold.manifest["datasets"]["dataset_2"]["class_counts"]) and cold.manifest["datasets"]["dataset_2"]["images"]
    )
    c, w = per_backbone(cold, cold_recs), per_backbone(warm, warm_recs)
    embedded = sum(v["computed"] for v in w.values())
    print(
        f"images: {n_images}; whole zoo: cold {cold_s:.1f} s, warm {warm_s:.1f} s (cache hit; {embedded} images "
        f"embedded warm, {encoder_timings_taken(warm_recs)} encoder timings taken warm)"
    )
    if args.baseline_src:
        here = Path(__file__).resolve().parents[1]
        base = subprocess_run_seconds(Path(args.baseline_src).resolve(), probes, args.data_dir, args.threads)
        mine = subprocess_run_seconds(here, probes, args.data_dir, args.threads)
        print(
            f"warm run in a fresh process, same cache: {args.baseline_src} {base:.1f} s, this checkout ({here}) "
            f"{mine:.1f} s (x{base / mine:.1f})"
        )
    if args.compare_probe:
        # the same warm suite again, in this process, on the same cached features: first each probe fold fitted
        # by both probes back to back (their fit times under the same load), then whole warm runs with the
        # probe as first written, on the float32 features as cached (what it ran on) and on float64 copies
        both = interleaved_fit_seconds(probes, args.data_dir)
        print(
            f"probe fits, both probes on each of {both['folds']} folds back to back: as first written "
            f"{both['direct']:.1f} s, row-space {both['row-space']:.1f} s (x{both['direct'] / both['row-space']:.1f})"
        )
        if args.profile:  # the warm run above was profiled: time the row-space probe's run again
            warm, warm_recs, warm_s = run(probes, args.data_dir)
        for label, float64 in (
            ("probe as first written (GridSearchCV, all d float32 features)", False),
            ("probe as first written on float64 copies of the features", True),
        ):
            old, old_recs, old_s = run_with_direct_probe(probes, args.data_dir, float64)
            compare_probes(label, warm, warm_recs, warm_s, old, old_recs, old_s)
    header = f"{'encoder':32} {'scheme':13} {'acc3 %':>7} {'AUC':>6} {'embed img/s':>11} {'fit s':>7} {'cold s':>7} {'warm s':>7} {'warm hits':>9}"
    print(header)
    ranked = sorted(c.items(), key=lambda kv: -(kv[1]["acc"] or 0))
    for name, r in ranked:
        enc, scheme = (
            name.rsplit("-", 2)[0] if name.endswith("linear-probe") else name.rsplit("-", 1)[0],
            ("linear-probe" if name.endswith("linear-probe") else "knn"),
        )
        print(
            f"{enc:32} {scheme:13} {100 * (r['acc'] or 0):7.1f} {r['auc'] or float('nan'):6.3f} {r['embed_ips']:11.1f} "
            f"{r['fit_s']:7.2f} {r['train_s']:7.2f} {w[name]['train_s']:7.2f} {w[name]['hits']:9d}"
        )
    if finetune:
        ft = work / "ft.toml"
        ft.write_text(
            suite_text(
                "zoo-ft", work / "runs", [], args.size, args.per_class, args.weights, finetune, args.epochs, args.batch
            )
        )
        result, recs, ft_s = run(ft, args.data_dir)
        f = per_backbone(result, recs)
        print(f"fine-tuning {', '.join(finetune)} ({args.epochs} epochs, every layer trained): {ft_s:.1f} s")
        for enc in finetune:
            r = f[f"{enc}-fine-tune"]
            probe = c.get(f"{enc}-linear-probe")
            knn = c.get(f"{enc}-knn")
            line = f"  {enc:28} fine-tune acc3 {100 * (r['acc'] or 0):5.1f} %  AUC {r['auc'] or float('nan'):.3f}  train {r['train_s']:7.1f} s"
            if probe is not None:
                line += (
                    f" | linear-probe acc3 {100 * (probe['acc'] or 0):5.1f} % train {probe['train_s']:.1f} s cold "
                    f"(x{r['train_s'] / max(probe['train_s'], 1e-9):.0f}), {w[f'{enc}-linear-probe']['train_s']:.2f} s warm"
                )
            if knn is not None:
                line += f" | knn acc3 {100 * (knn['acc'] or 0):5.1f} %"
            print(line)


if __name__ == "__main__":
    main()
