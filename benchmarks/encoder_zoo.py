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
again with that cache (every feature a hit). Threads: whatever --threads auto gives (2 cores here).
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


def run(path, data_dir):
    from benchbox.define.suite import load_suite
    from benchbox.execute.runner import run_suite
    from benchbox.execute.store import RunStore
    from benchbox.plugins import load_registry

    reg = load_registry()
    t0 = time.perf_counter()
    result = run_suite(load_suite(path, reg), reg, data_dir=data_dir, new=True)
    seconds = time.perf_counter() - t0
    records, _ = RunStore(result.run_dir).read_records()
    return result, records, seconds


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
    args = ap.parse_args()
    encoders = ZOO[: args.encoders]
    finetune = [e for e in args.finetune.split(",") if e]
    work = Path(tempfile.mkdtemp(prefix="encoder-zoo-"))
    os.environ["BENCHBOX_CACHE"] = str(work / "cache")  # a cold, empty cache
    probes = work / "zoo.toml"
    probes.write_text(
        suite_text("zoo", work / "runs", encoders, args.size, args.per_class, args.weights, [], 1, args.batch)
    )
    print(
        f"encoder zoo: {len(encoders)} timm encoders, weights = {args.weights!r}"
        f"{' (RANDOM: cost and random-feature figures, not an ImageNet ranking)' if args.weights == 'none' else ''}; "
        f"Dataset_2 at {args.size} px, 5-fold patient-grouped, cache {work / 'cache'}"
    )
    cold, cold_recs, cold_s = run(probes, args.data_dir)
    warm, warm_recs, warm_s = run(probes, args.data_dir)
    n_images = (
        len(cold.manifest["datasets"]["dataset_2"]["class_counts"]) and cold.manifest["datasets"]["dataset_2"]["images"]
    )
    c, w = per_backbone(cold, cold_recs), per_backbone(warm, warm_recs)
    print(f"images: {n_images}; whole zoo: cold {cold_s:.1f} s, warm {warm_s:.1f} s (cache hit)")
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
