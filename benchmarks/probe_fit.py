"""One linear-probe fold, three ways, back to back on the same features: where the row-space probe's speed
comes from (benchbox/execute/probe.py).

    python benchmarks/probe_fit.py [--n 72] [--dims 512,1280,2048] [--classes 3] [--reps 3]

For each feature dimension d: n training images (patient pairs, a weak class signal in a few features, as a
random encoder gives), and the seconds of one fold's probe (7 C x 5 inner splits + the refit) as
- "direct": GridSearchCV over StandardScaler + LogisticRegression on all d features, BLAS threads as the
  process has them (the probe as first written);
- "direct, BLAS 1 thread": the same inside threadpoolctl's limit of one BLAS thread;
- "row-space": fit_linear_probe (one BLAS thread, the row space, scikit-learn's objective without its checks).
The three run in turn, --reps times (the median is printed), so a busy machine slows them alike; the chosen
C of each is printed too. On a shared machine the absolute figures move with the load; the ratios less so.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def features(n: int, d: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = np.abs(rng.normal(size=(n, d))).astype(np.float32)
    x[:, :8] += 0.7 * y[:, None]
    return x, y, [f"p{i // 2}" for i in range(n)]


def main():
    from threadpoolctl import threadpool_info, threadpool_limits

    from benchbox.execute.probe import fit_linear_probe, fit_linear_probe_direct

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=72, help="training images in the fold (72: 90 images, 5 folds)")
    ap.add_argument("--dims", default="512,1280,2048")
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    blas = {i["internal_api"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    print(f"one probe fold, n = {args.n} training images, {args.classes} classes; BLAS threads {blas}")

    def direct_one_thread(*a):
        with threadpool_limits(limits=1, user_api="blas"):
            return fit_linear_probe_direct(*a)

    ways = [("direct", fit_linear_probe_direct), ("direct, BLAS 1 thread", direct_one_thread)]
    ways.append(("row-space", fit_linear_probe))
    for d in (int(v) for v in args.dims.split(",")):
        x, y, groups = features(args.n, d, args.classes, seed=d)
        fit_linear_probe(x, y, groups, "none", 1)  # imports, first calls
        times = {name: [] for name, _ in ways}
        chosen = {}
        for _ in range(args.reps):
            for name, fit in ways:
                t0 = time.perf_counter()
                _, info = fit(x, y, groups, "none", 1)
                times[name].append(time.perf_counter() - t0)
                chosen[name] = info["probe_C"]
        fast = statistics.median(times["row-space"])
        parts = [f"{name} {statistics.median(t):.3f} s (C {chosen[name]:g})" for name, t in times.items()]
        print(
            f"d = {d}: " + ", ".join(parts) + f"; direct / row-space x{statistics.median(times['direct']) / fast:.1f}"
        )


if __name__ == "__main__":
    main()
