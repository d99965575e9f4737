"""Local vs Ray executor wall time on the quickstart suite (or any suite), in one command.

Runs the suite twice into fresh run directories — once with the local executor, once on a local
Ray instance with N workers — prints both wall times and checks that the fold records agree.

    python benchmarks/ray_vs_local.py suites/quickstart.toml --workers 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(suite, run_dir, extra):
    exe = Path(sys.executable).with_name("benchbox")
    t0 = time.perf_counter()
    res = subprocess.run(
        [str(exe), "run", str(suite), "--run-dir", str(run_dir), *extra], capture_output=True, text=True
    )
    if res.returncode != 0:
        sys.exit(f"benchbox run {' '.join(extra)} failed:\n{res.stderr[-3000:]}")
    return time.perf_counter() - t0


def records(run_dir):
    return {p.name: json.loads(p.read_text()) for p in sorted((Path(run_dir) / "folds").glob("*.json"))}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("suite", nargs="?", default="suites/quickstart.toml")
    ap.add_argument("--workers", type=int, default=2, help="CPUs of the local Ray instance (one fold per CPU)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t_local = run(args.suite, Path(tmp) / "local", [])
        t_ray = run(
            args.suite,
            Path(tmp) / "ray",
            ["--executor", "ray", "--ray-local-cpus", str(args.workers), "--cpus-per-fold", "1"],
        )
        a, b = records(Path(tmp) / "local"), records(Path(tmp) / "ray")
        same = a.keys() == b.keys() and all(a[k]["probabilities"] == b[k]["probabilities"] for k in a)
        max_diff = max(
            (
                abs(x - y)
                for k in a
                for ra, rb in zip(a[k]["probabilities"], b[k]["probabilities"])
                for x, y in zip(ra, rb)
            ),
            default=0.0,
        )
    print(f"suite {args.suite}: {len(a)} folds")
    print(f"local executor            : {t_local:7.1f} s (wall, whole command)")
    print(f"ray, {args.workers} worker CPU(s)       : {t_ray:7.1f} s (wall, whole command, Ray start-up included)")
    print(f"speed-up                  : {t_local / t_ray:7.2f}x")
    print(f"records identical         : {same} (max |dp| {max_diff:.2e})")


if __name__ == "__main__":
    main()
