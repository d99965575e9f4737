"""The most frozen-prefix caching can save, counted in multiply-accumulates (no timing).

For each network at the study's cutoff, counts the forward MACs of the frozen prefix (F_p) and of
the trainable suffix with the head (F_s) with torch's FlopCounterMode, then bounds the speed-up of
the study's protocol (K folds x E epochs, a share (K-1)/K of the images trained on per fold):

    uncached  = K*E*train * (F_p + 3*F_s)     forward through everything, backward through the suffix
    cached    = images * F_p + K*E*train * 3*F_s   the prefix once per image per run

(backward ~ 2x forward). Test-fold predictions, the optimiser and per-fold fixed costs are left
out, so real speed-ups are lower. The bound for all five networks together is the ratio of the sums.

    python benchmarks/prefix_flops.py --input 200x266 --folds 10 --epochs 10
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchbox.plugins import load_registry
from benchbox_engine_common.networks import STUDY


def macs(fn, *args):
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = fn(*args)
    return counter.get_total_flops() / 2, out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", default="200x266", help="HxW (the Inception family needs at least 75x75)")
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args()
    from benchbox_torch import engine

    h, w = (int(v) for v in args.input.split("x"))
    passes = args.folds * args.epochs * (args.folds - 1) / args.folds  # training passes per image
    registry = load_registry()
    print(f"input={h}x{w} folds={args.folds} epochs={args.epochs}: {passes:.0f} training passes per image")
    print(
        f"{'network':20s} {'cutoff':>6s} {'prefix GMAC':>11s} {'suffix GMAC':>11s} {'suffix share':>12s} {'bound':>7s}"
    )
    sum_plain = sum_cached = 0.0
    for network in STUDY:
        backbone = registry.get("backbone", f"torch/{network}")
        options = {**backbone.defaults, "input_size": [h, w], "weights": "none"}
        net, _ = engine.build_model(network, options, 3, seed=0)
        net.eval()
        prefix, suffix = engine.split_prefix(net.base)
        f_p, boundary = macs(prefix, torch.zeros(1, 3, h, w))
        f_s, _ = macs(engine.SuffixNet(suffix, net).eval(), *boundary)
        plain, cached = passes * (f_p + 3 * f_s), f_p + passes * 3 * f_s
        sum_plain, sum_cached = sum_plain + plain, sum_cached + cached
        print(
            f"{network:20s} {STUDY[network]['cutoff']:6d} {f_p / 1e9:11.3f} {f_s / 1e9:11.3f} "
            f"{f_s / (f_p + f_s):12.1%} {plain / cached:6.2f}x"
        )
    print(f"{'all five':20s} {'':6s} {'':11s} {'':11s} {'':12s} {sum_plain / sum_cached:6.2f}x")


if __name__ == "__main__":
    main()
