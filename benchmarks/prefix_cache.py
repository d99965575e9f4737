"""(a) Frozen-prefix caching vs recomputing the prefix, for the five networks at the study's cutoffs.

Runs a scaled-down study protocol (N synthetic images, K folds, E epochs, small inputs) twice per
network in one process — uncached, then cached — and prints wall time, speed-up and the largest
difference between the two paths' predicted probabilities.

The prefix uses fixed weights saved to a local file, which is how ImageNet weights behave (the
prefix is computed once per run); with ``--random`` every fold has its own seeded random prefix
(computed once per fold).

    python benchmarks/prefix_cache.py --framework torch --images 300 --folds 3 --epochs 3
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from benchbox.contracts import FoldJob, TrainingConfig
from benchbox.networks import STUDY
from benchbox.plugins import load_registry
from benchbox.prefix_cache import CACHE
from benchbox.splitters import Protocol, assign_folds, train_test_indices

SIZES = {"vgg19": [64, 85], "mobilenet_v2": [64, 85], "inception_v3": [80, 106], "xception": [80, 106],
         "inception_resnet_v2": [80, 106]}


def fixed_weights(framework, network, options, directory):
    """Save one seeded initialisation of the backbone to a file: a stand-in for ImageNet weights."""
    path = f"{directory}/{framework}-{network}"
    if framework == "torch":
        import torch
        from benchbox_torch import engine

        net, _ = engine.build_model(network, {**options, "weights": "none"}, 3, seed=123)
        torch.save(net.base.state_dict(), path + ".pth")
        return path + ".pth"
    from benchbox_keras import engine

    _, base = engine.build_model(network, {**options, "weights": "none"}, 3, seed=123)
    base.save_weights(path + ".weights.h5")
    return path + ".weights.h5"


def run_protocol(backbone, options, images, labels, folds, args):
    probs = np.zeros((len(labels), 3))
    ids = np.array([f"img{i}" for i in range(len(labels))])
    t0 = time.perf_counter()
    for f in range(args.folds):
        tr, te = train_test_indices(folds, f)
        job = FoldJob(images[tr], labels[tr], images[te], 3, options,
                      TrainingConfig(epochs=args.epochs, batch_size=args.batch_size), seed=f,
                      train_ids=ids[tr].tolist(), test_ids=ids[te].tolist())
        probs[te] = backbone.fit_predict(job).probabilities
    return time.perf_counter() - t0, probs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--framework", default="torch", choices=["torch", "keras"])
    ap.add_argument("--networks", default=",".join(STUDY))
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--random", action="store_true", help="seeded random weights per fold instead of fixed ones")
    args = ap.parse_args()
    registry = load_registry()
    dataset = registry.get("dataset", "synthetic")
    print(f"framework={args.framework} images={args.images} folds={args.folds} epochs={args.epochs} "
          f"batch={args.batch_size} weights={'random per fold' if args.random else 'fixed (pretrained-like)'}")
    print(f"{'network':22s} {'cutoff':>6s} {'input':>8s} {'uncached s':>11s} {'cached s':>9s} {'speed-up':>9s} {'max |dp|':>10s}")
    total_plain = total_cached = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for network in args.networks.split(","):
            size = SIZES[network]
            samples = dataset.samples({**dataset.defaults, "images": args.images, "patients": args.images // 3}, 0, None)
            images, labels = samples.load(samples.table, tuple(size)), samples.labels
            folds = assign_folds(Protocol(k=args.folds), labels, samples.table["group"], 0)
            backbone = registry.get("backbone", f"{args.framework}/{network}")
            options = {**backbone.defaults, "input_size": size}
            options["weights"] = "none" if args.random else fixed_weights(args.framework, network, options, tmp)
            CACHE.clear()
            t_plain, p_plain = run_protocol(backbone, {**options, "cache_prefix": False}, images, labels, folds, args)
            t_cached, p_cached = run_protocol(backbone, {**options, "cache_prefix": True}, images, labels, folds, args)
            total_plain += t_plain
            total_cached += t_cached
            print(f"{network:22s} {STUDY[network]['cutoff']:6d} {'x'.join(map(str, size)):>8s} {t_plain:11.1f} "
                  f"{t_cached:9.1f} {t_plain / t_cached:8.2f}x {np.abs(p_plain - p_cached).max():10.2e}", flush=True)
    print(f"{'all five':22s} {'':6s} {'':8s} {total_plain:11.1f} {total_cached:9.1f} {total_plain / total_cached:8.2f}x")


if __name__ == "__main__":
    main()
