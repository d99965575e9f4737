"""(b) benchbox's training and inference loop vs a minimal hand-written loop, same framework.

Trains PyTorch MobileNet v2 (the study's cutoff 10 and head [1000, 750]) on the same synthetic
images with the same epochs and batches, alternating the two variants in one process, and prints
the wall time of each and the harness overhead. Prefix caching is off, so both do the same work.

    python benchmarks/harness_overhead.py --images 200 --epochs 3 --repeats 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torchvision
from torch import nn

from benchbox.contracts import FoldJob, TrainingConfig
from benchbox.execute.harness import run_fold
from benchbox.plugins import load_registry


def hand_written(x_train, y_train, x_test, epochs, batch_size, seed):
    """The loop a researcher would write: torchvision features, frozen first 7 modules, head."""
    torch.manual_seed(seed)
    features = torchvision.models.mobilenet_v2().features
    frozen = [m for m in features.modules() if any(True for _ in m.parameters(recurse=False))][:7]
    for m in frozen:
        for p in m.parameters():
            p.requires_grad_(False)
    head = nn.Sequential(
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(1280, 1000),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(1000, 750),
        nn.ReLU(),
        nn.Linear(750, 3),
    )
    model = nn.Sequential(features, head)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    prep = lambda xb: ((xb.float().expand(-1, 3, -1, -1) / 255) - mean) / std  # noqa: E731
    xs, ys = torch.from_numpy(x_train).unsqueeze(1), torch.from_numpy(y_train)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3, eps=1e-7, fused=True)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for m in frozen:
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    for _ in range(epochs):
        for idx in torch.randperm(len(xs), generator=g).split(batch_size):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(prep(xs[idx])), ys[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        xt = torch.from_numpy(x_test).unsqueeze(1)
        return torch.cat([torch.softmax(model(prep(xt[i : i + batch_size])), 1) for i in range(0, len(xt), batch_size)])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--size", default="64x85")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    registry = load_registry()
    ds = registry.get("dataset", "synthetic")
    s = ds.samples({**ds.defaults, "images": args.images, "patients": args.images // 3}, 0, None)
    x, y = s.load(s.table, (h, w)), s.labels
    n = int(0.8 * len(y))
    backbone = registry.get("backbone", "torch/mobilenet_v2")
    options = {**backbone.defaults, "weights": "none", "input_size": [h, w], "cache_prefix": False}
    times = {"benchbox": [], "hand-written": []}
    for r in range(args.repeats):
        t0 = time.perf_counter()
        run_fold(
            backbone,
            backbone.name,
            FoldJob(x[:n], y[:n], x[n:], 3, options, TrainingConfig(args.epochs, args.batch_size), seed=r),
            "benchmark fold",
        )
        times["benchbox"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        hand_written(x[:n], y[:n], x[n:], args.epochs, args.batch_size, r)
        times["hand-written"].append(time.perf_counter() - t0)
    bb, hw = np.median(times["benchbox"]), np.median(times["hand-written"])
    print(
        f"torch/mobilenet_v2, {n} train / {len(y) - n} test images at {h}x{w}, {args.epochs} epochs, batch {args.batch_size}, "
        f"median of {args.repeats} alternating repeats"
    )
    print(f"benchbox harness    : {bb:7.2f} s  {[f'{t:.2f}' for t in times['benchbox']]}")
    print(f"hand-written loop    : {hw:7.2f} s  {[f'{t:.2f}' for t in times['hand-written']]}")
    print(f"harness overhead     : {100 * (bb - hw) / hw:+6.1f} %  (target: under 5 %)")


if __name__ == "__main__":
    main()
