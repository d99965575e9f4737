"""Framework threads on a busy machine: PyTorch MobileNet v2 inference, ms per batch, with 1 thread and with
the default pool (one thread per core), on the machine as it is and beside one busy-looping process.

Why: on a 2-core machine shared with other jobs, folds were seen 10-100x slower than on the idle machine,
and their timings meaningless; `benchbox run --threads 1` is the remedy the busy-machine note names.
Each figure comes from a fresh child process (thread pools are fixed when torch is imported).

    python benchmarks/busy_threads.py [--batches 20]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

CHILD = """
import sys, time, torch, torchvision
m = torchvision.models.mobilenet_v2(num_classes=3).eval()
x = torch.randn(6, 3, 32, 38)
with torch.no_grad():
    for _ in range(3):
        m(x)
    t = time.perf_counter()
    for _ in range(int(sys.argv[1])):
        m(x)
print(torch.get_num_threads(), 1000 * (time.perf_counter() - t) / int(sys.argv[1]))
"""


def measure(threads: int | None, batches: int) -> tuple[int, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    out = subprocess.run([sys.executable, "-c", CHILD, str(batches)], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(out.stderr[-2000:])
    n, ms = out.stdout.split()
    return int(n), float(ms)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=20)
    args = ap.parse_args()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    print(f"{'machine':<28} {'threads':>7} {'ms/batch':>9}")
    for label in ("as it is", "beside 1 busy process"):
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if "busy" in label else None
        try:
            for threads in (1, None):
                n, ms = measure(threads, args.batches)
                print(f"{label:<28} {n:>7} {ms:>9.1f}", flush=True)
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()


if __name__ == "__main__":
    main()
