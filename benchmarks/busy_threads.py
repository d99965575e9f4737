"""Framework threads on a busy machine: PyTorch MobileNet v2 inference, ms per batch, with the frameworks'
default pool (one thread per core), with `--threads auto` (benchbox's default: the cores free at the start)
and with 1 thread, on the machine as it is and beside one busy-looping process.

Why: on a 2-core machine shared with other jobs, folds were seen 10-100x slower than on the idle machine,
and their timings meaningless. Each figure comes from a fresh child process (thread pools are fixed when
torch is imported); `auto` runs benchbox.execute.environment.choose_threads("auto") in the child before torch loads,
exactly as `benchbox run` does. The busy process runs until the 1-minute load average has taken it in
(auto reads the load average, which lags), so the loaded rows show what a run started on a busy machine gets.

    python benchmarks/busy_threads.py [--batches 20] [--settle 90]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

CHILD = """
import os, sys, time
mode = sys.argv[2]
if mode == "auto":
    from benchbox.execute.environment import choose_threads
    choose_threads("auto")
elif mode != "default":
    os.environ["OMP_NUM_THREADS"] = mode
import torch, torchvision
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

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
MODES = ("default", "auto", "1")


def measure(mode: str, batches: int) -> tuple[int, float]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    out = subprocess.run([sys.executable, "-c", CHILD, str(batches), mode], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(out.stderr[-2000:])
    n, ms = out.stdout.split()
    return int(n), float(ms)


def settle(start: float, seconds: float) -> float:
    """Wait until the 1-minute load average has risen by 0.8 (the busy process), at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and os.getloadavg()[0] < start + 0.8:
        time.sleep(2)
    return os.getloadavg()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--settle", type=float, default=90, help="Seconds to let the load average take in the hog.")
    args = ap.parse_args()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    print(f"{'machine':<24} {'load':>5} {'threads':<9} {'':>3} {'ms/batch':>9}")
    for label in ("as it is", "beside 1 busy process"):
        load = os.getloadavg()[0]
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if "busy" in label else None
        try:
            if hog is not None:
                load = settle(load, args.settle)
            for mode in MODES:
                n, ms = measure(mode, args.batches)
                print(f"{label:<24} {load:>5.2f} {mode:<9} {n:>3} {ms:>9.1f}", flush=True)
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()


if __name__ == "__main__":
    main()
