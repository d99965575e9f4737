"""The README's quick start on an idle machine and beside one busy process, side by side.

Issue 24's target: on 2 cores with another job running, `benchbox run suites/quickstart.toml` (default
`--threads auto`) finishes within 1.5x of its idle time, and its report names the machine's state. This
script runs the quick start twice in fresh run directories — first as the machine is, then beside one
busy-looping process (started early enough for the 1-minute load average to take it in, since `auto`
reads it) — and prints both wall times, the ratio, the threads each run chose (from its manifest) and
whether each report.md carries the busy-start caveat. Optionally (`--default-threads`) a third run beside
the busy process with the frameworks' own thread pools (`--threads` unset is `auto`, so this passes the
core count), to show what `auto` saves.

    python benchmarks/busy_quickstart.py [--suite suites/quickstart.toml] [--settle 90] [--default-threads]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def settle(start: float, seconds: float) -> float:
    """Wait until the 1-minute load average has risen by 0.8 (the busy process), at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and os.getloadavg()[0] < start + 0.8:
        time.sleep(2)
    return os.getloadavg()[0]


def run_quickstart(suite: str, run_dir: Path, threads: str | None) -> float:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    cmd = [sys.executable, "-m", "benchbox", "run", suite, "--run-dir", str(run_dir)]
    if threads is not None:
        cmd += ["--threads", threads]
    start = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return seconds


def threads_chosen(run_dir: Path) -> str:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    chosen = (manifest.get("environment") or {}).get("threads") or {}
    return f"{chosen.get('threads', '?')} thread(s), {chosen.get('chosen_by', '?')}"


def busy_caveat(run_dir: Path) -> bool:
    report = run_dir / "report.md"
    return report.is_file() and "busy" in report.read_text().lower()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="suites/quickstart.toml")
    ap.add_argument("--settle", type=float, default=90, help="Seconds to let the load average take in the hog.")
    ap.add_argument("--default-threads", action="store_true", help="Also run beside the hog with one thread per core.")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="busy-quickstart-"))
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start; run directories in {root}")
    plan = [("as it is", None, "idle"), ("beside 1 busy process", None, "busy")]
    if args.default_threads:
        plan.append(("beside 1 busy process", str(os.cpu_count()), "busy-cores"))
    rows = []
    for label, threads, tag in plan:
        load = os.getloadavg()[0]
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if "busy" in label else None
        try:
            if hog is not None:
                load = settle(load, args.settle)
            seconds = run_quickstart(args.suite, root / tag, threads)
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
        rows.append((label, load, threads or "auto", seconds, threads_chosen(root / tag), busy_caveat(root / tag)))
    idle = rows[0][3]
    print(f"{'machine':<24} {'load':>5} {'--threads':<10} {'wall s':>7} {'x idle':>7}  chosen / caveat in report")
    for label, load, threads, seconds, chosen, caveat in rows:
        print(
            f"{label:<24} {load:>5.2f} {threads:<10} {seconds:>7.1f} {seconds / idle:>7.2f}  "
            f"{chosen} / {'busy caveat' if caveat else 'no caveat'}"
        )


if __name__ == "__main__":
    main()
