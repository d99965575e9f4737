"""What each test costs in CPU seconds, for two checkouts side by side (issue 24: the suite's budget).

Wall time on a shared machine says more about the neighbours than about a test; CPU seconds (this
process plus the subprocesses it waited for: a `benchbox` CLI call, a pip install) hardly change with
the load. Each checkout's tests run in one pytest process (`-n 0`, one framework thread, as an xdist
worker runs them), one after the other, and the table lists setup + call + teardown per test:

    python benchmarks/test_cost.py --before ../main tests/test_board.py tests/test_bundle.py
    python benchmarks/test_cost.py --before ../main -m "not slow" --top 40   # the fast tier

A test in only one checkout shows a dash in the other column. Each checkout finds the real X-rays in the
``shared/`` folder beside it (tests/conftest.py), so put a baseline export next to one (or a link to it). Ray's workers are not children of the
test process: their CPU is not counted (compare the wall column there). Collection is timed apart.
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

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "benchbox_test_cost_plugin"
PLUGIN_SOURCE = """
import json, os, resource, time
import pytest

_rows = {}
_t = {}


def _cpu():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def pytest_collection(session):
    _t["collect"] = (_cpu(), time.perf_counter())


def pytest_collection_finish(session):
    cpu, wall = _t["collect"]
    _rows["<collection>"] = [_cpu() - cpu, time.perf_counter() - wall]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    cpu, wall = _cpu(), time.perf_counter()
    yield
    _rows[item.nodeid] = [_cpu() - cpu, time.perf_counter() - wall]


def pytest_sessionfinish(session):
    with open(os.environ["BENCHBOX_TEST_COST_OUT"], "w") as f:
        json.dump(_rows, f)
"""


def measure(checkout: Path, pytest_args: list[str], plugin_dir: Path) -> tuple[dict, float]:
    out = plugin_dir / f"cost-{abs(hash(str(checkout)))}.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(plugin_dir), str(checkout), str(checkout / "plugins")]),
        "BENCHBOX_TEST_COST_OUT": str(out),
    }
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        env[name] = "1"  # as on an xdist worker (tests/conftest.py)
    command = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", PLUGIN, "-p", "no:cacheprovider"]
    command += ["-o", "addopts=", "-W", "ignore", *pytest_args]
    t0 = time.perf_counter()
    res = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    tail = res.stdout.strip().splitlines()[-1:] or ["(no output)"]
    print(f"{checkout}: {tail[0]} (exit {res.returncode}, {wall:.0f} s wall)", flush=True)
    if res.returncode not in (0, 5):
        print(res.stdout[-4000:], res.stderr[-2000:], sep="\n", file=sys.stderr)
    return (json.loads(out.read_text()) if out.exists() else {}), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, default=None, help="the baseline checkout (e.g. /work/main)")
    ap.add_argument("--after", type=Path, default=ROOT, help="the checkout under test (default: this one)")
    ap.add_argument("--top", type=int, default=0, help="list only the N costliest tests (0: all)")
    args, pytest_args = ap.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        plugin_dir = Path(tmp)
        (plugin_dir / f"{PLUGIN}.py").write_text(PLUGIN_SOURCE)
        before, wall_before = measure(args.before.resolve(), pytest_args, plugin_dir) if args.before else ({}, 0.0)
        after, wall_after = measure(args.after.resolve(), pytest_args, plugin_dir)
    names = sorted(set(before) | set(after), key=lambda n: -max(before.get(n, [0])[0], after.get(n, [0])[0]))
    if args.top:
        names = names[: args.top]
    cell = lambda row, i: f"{row[i]:8.1f}" if row else "       -"  # noqa: E731
    print(f"\n{'CPU s before':>12} {'after':>8} | {'wall s before':>13} {'after':>8} | test")
    for name in names:
        b, a = before.get(name), after.get(name)
        print(f"{cell(b, 0):>12} {cell(a, 0)} | {cell(b, 1):>13} {cell(a, 1)} | {name}")
    total = lambda rows: sum(r[0] for r in rows.values())  # noqa: E731
    print(
        f"{total(before):12.1f} {total(after):8.1f} | {wall_before:13.1f} {wall_after:8.1f} | total (CPU; wall of pytest)"
    )


if __name__ == "__main__":
    main()
