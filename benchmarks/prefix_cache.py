"""(a) Frozen-prefix caching vs recomputing the prefix, for the five networks at the study's cutoffs.

Runs the study's protocol (stratified K-fold, E epochs, the study's cutoffs and heads) twice per
network in one process — uncached, then cached — on N images at small input sizes, and prints wall
time, speed-up, and how far the two paths' predictions are apart (largest probability difference,
share of test images given the same class, accuracy of each).

The prefix uses fixed weights saved to a local file, which is how ImageNet weights behave (the
prefix is computed once per run); with ``--random`` every fold has its own seeded random prefix
(computed once per fold).

``--noise-floor`` also runs the uncached protocol in a child process with one thread instead of
the default: how far the framework's own results move when only the order of floating-point
sums changes. TensorFlow's CPU convolutions give an image slightly different outputs (~1e-8) in
differently composed batches, so no cache can be bit-identical there; the cached path is
"equal" when it differs from the uncached one by less than this floor.

    python benchmarks/prefix_cache.py --framework torch --images 300 --folds 3 --epochs 3
    python benchmarks/prefix_cache.py --dataset dataset_1 --data-dir ../shared/data --images 150 \\
        --folds 10 --epochs 10            # the study's protocol on real X-rays
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchbox.contracts import FoldJob, TrainingConfig
from benchbox.data.splitters import train_test_indices
from benchbox.execute.harness import run_fold
from benchbox.plugins import load_registry
from benchbox_engine_common.networks import STUDY
from benchbox_engine_common.prefix_cache import CACHE
from benchbox_splits import kfold

SIZES = {
    "vgg19": [64, 85],
    "mobilenet_v2": [64, 85],
    "inception_v3": [80, 106],
    "xception": [80, 106],
    "inception_resnet_v2": [80, 106],
}


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


def load_data(registry, args, size):
    """(images, labels, ids): the synthetic set, or a seeded stratified subset of a real one."""
    dataset = registry.get("dataset", args.dataset)
    options = dict(dataset.defaults)
    if args.dataset == "synthetic":
        options.update(images=args.images, patients=max(args.images // 3, 1))
    samples = dataset.samples(options, 0, args.data_dir)
    table, labels = samples.table, samples.labels
    if args.dataset != "synthetic" and 0 < args.images < len(table):
        rng = np.random.default_rng(0)
        share = args.images / len(table)
        keep = np.concatenate(
            [
                rng.permutation(np.flatnonzero(labels == c))[: max(1, round(share * (labels == c).sum()))]
                for c in np.unique(labels)
            ]
        )
        keep.sort()
        table, labels = table.iloc[keep].reset_index(drop=True), labels[keep]
    return samples.load(table, tuple(size)), labels, table["id"].astype(str).to_numpy()


def run_protocol(backbone, options, images, labels, ids, args):
    probs = np.zeros((len(labels), len(np.unique(labels))))
    folds = kfold(args.folds, True, False, labels, ids, 0)
    t0 = time.perf_counter()
    for f in range(args.folds):
        tr, te = train_test_indices(folds, f)
        job = FoldJob(
            images[tr],
            labels[tr],
            images[te],
            probs.shape[1],
            options,
            TrainingConfig(epochs=args.epochs, batch_size=args.batch_size),
            seed=f,
            train_ids=ids[tr].tolist(),
            test_ids=ids[te].tolist(),
        )
        probs[te] = run_fold(backbone, backbone.name, job, f"fold {f}").probabilities
    return time.perf_counter() - t0, probs


def agreement(reference, other) -> str:
    """Largest and mean absolute probability difference, and the share of identical classes."""
    diff = np.abs(reference - other)
    return f"{diff.max():9.2e} {diff.mean():9.2e} {(reference.argmax(1) == other.argmax(1)).mean():10.1%}"


def noise_floor(args, network, weights, out):
    """The uncached protocol in a child process with one thread: the framework's own spread."""
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        __file__,
        "--framework",
        args.framework,
        "--networks",
        network,
        "--dataset",
        args.dataset,
        "--images",
        str(args.images),
        "--folds",
        str(args.folds),
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--weights",
        weights,
        "--uncached-only",
        out,
        "--threads",
        "1",
    ]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return np.load(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--framework", default="torch", choices=["torch", "keras"])
    ap.add_argument("--networks", default=",".join(STUDY))
    ap.add_argument("--dataset", default="synthetic", help="synthetic, dataset_1, dataset_2, cohen, kermany")
    ap.add_argument("--data-dir", default=None, help="root of the real X-rays (e.g. ../shared/data)")
    ap.add_argument("--images", type=int, default=300, help="synthetic: how many; real: a stratified subset (0 = all)")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--random", action="store_true", help="seeded random weights per fold instead of fixed ones")
    ap.add_argument("--noise-floor", action="store_true", help="also run uncached with one thread (child process)")
    ap.add_argument("--weights", help=argparse.SUPPRESS)
    ap.add_argument("--uncached-only", metavar="NPY", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.noise_floor and args.random:
        ap.error("--noise-floor needs fixed weights (the child process must load the same file): drop --random")
    if args.threads and args.framework == "torch":
        import torch

        torch.set_num_threads(args.threads)
    registry = load_registry()
    if args.uncached_only:
        network = args.networks
        backbone = registry.get("backbone", f"{args.framework}/{network}")
        images, labels, ids = load_data(registry, args, SIZES[network])
        options = {**backbone.defaults, "input_size": SIZES[network], "weights": args.weights, "cache_prefix": False}
        np.save(args.uncached_only, run_protocol(backbone, options, images, labels, ids, args)[1])
        return
    print(
        f"framework={args.framework} dataset={args.dataset} images={args.images} folds={args.folds} "
        f"epochs={args.epochs} batch={args.batch_size} "
        f"weights={'random per fold' if args.random else 'fixed (pretrained-like)'}"
    )
    print(
        f"{'network':20s} {'cutoff':>6s} {'input':>7s} {'uncached s':>10s} {'cached s':>9s} {'speed-up':>8s} "
        f"{'max |dp|':>9s} {'mean |dp|':>9s} {'same class':>10s} {'acc unc/cached':>14s}"
        + (f" {'1-thread max':>12s} {'mean':>9s} {'same class':>10s}" if args.noise_floor else "")
    )
    total_plain = total_cached = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for network in args.networks.split(","):
            size = SIZES[network]
            images, labels, ids = load_data(registry, args, size)
            backbone = registry.get("backbone", f"{args.framework}/{network}")
            options = {**backbone.defaults, "input_size": size}
            options["weights"] = "none" if args.random else fixed_weights(args.framework, network, options, tmp)
            CACHE.clear()
            t_plain, p_plain = run_protocol(backbone, {**options, "cache_prefix": False}, images, labels, ids, args)
            t_cached, p_cached = run_protocol(backbone, {**options, "cache_prefix": True}, images, labels, ids, args)
            total_plain += t_plain
            total_cached += t_cached
            acc = f"{(p_plain.argmax(1) == labels).mean():.3f}/{(p_cached.argmax(1) == labels).mean():.3f}"
            line = (
                f"{network:20s} {STUDY[network]['cutoff']:6d} {'x'.join(map(str, size)):>7s} {t_plain:10.1f} "
                f"{t_cached:9.1f} {t_plain / t_cached:7.2f}x "
                f"{agreement(p_plain, p_cached)} {acc:>14s}"
            )
            if args.noise_floor:
                p_one = noise_floor(args, network, options["weights"], f"{tmp}/{network}-1thread.npy")
                line += f"    {agreement(p_plain, p_one)}"
            print(line, flush=True)
    print(f"{'all':20s} {'':6s} {'':7s} {total_plain:10.1f} {total_cached:9.1f} {total_plain / total_cached:7.2f}x")


if __name__ == "__main__":
    main()
