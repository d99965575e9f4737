"""The study on one accelerator, in one command: throughput of the ten backbones, then the whole
study protocol, timed per cell. Prepared and tested on CPU (`--device cpu --scale 0.02` runs in the
test suite's slow tier); meant to run once on a GPU machine.

    python benchmarks/gpu_study.py --device cuda --out gpu-study        # full size, one GPU
    python benchmarks/gpu_study.py --device cpu --scale 0.02 --out /tmp/g  # the CPU rehearsal

1. `benchbox bench` for the five networks in both engines at batch 1 and 64, 200x266, fp32 and
   mixed precision (channels-last for PyTorch on CUDA).
2. The study's protocol (suites/paper.toml: Dataset_1 x five networks, Dataset_2 x MobileNet v2;
   10-fold CV, 10 epochs, batch 64, Adam, 200x266, Table 1's cutoffs and heads) with Dataset_1 and
   Dataset_2 composed from *synthetic* images of the study's class counts (224/700/504 and
   224/714/504; no download on a machine without network) and random weights (ImageNet weights
   change the numbers, not the time). Once with the PyTorch engine, once with the Keras engine on
   its GPU-capable backend (`--keras-backend`; default tensorflow, else jax, else torch), prefix
   caching on. Each cell's wall time is read from its fold records (train + test-fold predict).
3. Optionally (`--packing 1,2,4`), MobileNet v2 on Dataset_1 through the Ray executor with 1, 2 and
   4 folds per GPU (`--gpus-per-fold 1/n`), to measure when packing folds pays.

Writes OUT/bench.csv, OUT/study.csv, OUT/study.md and prints the markdown table. `--scale s` scales
image counts, epochs, folds (at least 2) and the input size (at least 32 px) for a quick rehearsal.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchbox_engine_common.networks import MIN_INPUT_SIZE

NETWORKS = {  # Table 1 of the study: cutoff and dense head
    "vgg19": (18, [1024]),
    "mobilenet_v2": (10, [1000, 750]),
    "inception_v3": (249, [1000]),
    "xception": (120, [1000, 750]),
    "inception_resnet_v2": (730, []),
}
DATASET_1 = {"covid": 224, "pneumonia": 700, "normal": 504}
DATASET_2 = {"covid": 224, "pneumonia": 714, "normal": 504}
FULL = {"size": (200, 266), "folds": 10, "epochs": 10, "batch": 64}


def scaled(scale: float) -> dict:
    h, w = FULL["size"]
    side = max(scale**0.5, 0.0)
    return {
        "size": (max(32, round(h * side)), max(32, round(w * side))),
        "folds": max(2, round(FULL["folds"] * min(1.0, scale * 5))),
        "epochs": max(1, round(FULL["epochs"] * scale)),
        "batch": max(4, round(FULL["batch"] * min(1.0, scale * 5))),
        "counts": [{c: max(6, round(n * scale)) for c, n in d.items()} for d in (DATASET_1, DATASET_2)],
    }


def exe() -> list[str]:
    """The benchbox command of this interpreter (`python -m benchbox` works without an installed script)."""
    return [sys.executable, "-m", "benchbox"]


def call(args, env, what, budget: float | None = None, must_pass: bool = True) -> float:
    """Wall time of one benchbox command; past ``budget`` seconds it is stopped (its stored folds stay).
    A study run that fails (``must_pass=False``) is reported and the script goes on: on a borrowed GPU
    one failed cell must not cost the figures of the others."""
    t0 = time.perf_counter()
    try:
        res = subprocess.run([*exe(), *args], env=env, capture_output=True, text=True, timeout=budget)
    except subprocess.TimeoutExpired:
        print(f"{what}: stopped after its budget of {budget:.0f} s; the folds it finished are timed", flush=True)
        return time.perf_counter() - t0
    if res.returncode != 0:
        message = f"{what} failed (exit {res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
        if must_pass:
            sys.exit(message)
        print(message, flush=True)
    return time.perf_counter() - t0


def suite_text(framework: str, cfg: dict, device: str, precision: str, networks) -> str:
    counts = lambda d: "{" + ", ".join(f"{c} = {n}" for c, n in d.items()) + "}"  # noqa: E731
    h, w = cfg["size"]
    lines = [
        f'name = "gpu-study-{framework}"',
        'description = "the study protocol on synthetic images of the study\'s counts (timing)"',
        "seed = 2020",
        'evaluators = ["paper"]',
        "[protocol]",
        'kind = "kfold"',
        f"k = {cfg['folds']}",
        "stratified = true",
        "grouped = false",
        "[training]",
        f"epochs = {cfg['epochs']}",
        f"batch_size = {cfg['batch']}",
        f'device = "{device}"',
        f'precision = "{precision}"',
    ]
    for name, composition in (("dataset_1", cfg["counts"][0]), ("dataset_2", cfg["counts"][1])):
        patients = max(3, sum(composition.values()) // 2)
        lines += [f"[datasets.{name}]", 'plugin = "synthetic"', f"class_counts = {counts(composition)}"]
        lines += [f"patients = {patients}"]
    for net in networks:
        cutoff, head = NETWORKS[net]
        lines += [
            f"[backbones.{net}]",
            f'plugin = "{framework}/{net}"',
            'weights = "none"',
            # a rehearsal's small inputs stay at or above what each network takes (Inception v3: 75x75)
            f"input_size = [{max(h, MIN_INPUT_SIZE[net])}, {max(w, MIN_INPUT_SIZE[net])}]",
            f"cutoff = {cutoff}",
            f"head = {head}",
        ]
    lines += ["[[experiments]]", 'datasets = ["dataset_1"]', f"backbones = {list(networks)}".replace("'", '"')]
    if "mobilenet_v2" in networks:
        lines += ["[[experiments]]", 'datasets = ["dataset_2"]', 'backbones = ["mobilenet_v2"]']
    return "\n".join(lines) + "\n"


def cell_times(run_dir: Path) -> dict:
    """(data set, backbone) -> (folds, seconds in fit + test-fold predict, as the harness timed them)."""
    out: dict = {}
    for path in sorted((run_dir / "folds").glob("*.json")):
        rec = json.loads(path.read_text())
        key = (rec.get("dataset", ""), rec.get("backbone", ""))
        folds, seconds = out.get(key, (0, 0.0))
        spent = float(rec.get("train_seconds", 0)) + float(rec.get("predict_seconds", 0))
        out[key] = (folds + 1, seconds + spent)
    return out


def clear_own_run(run_dir: Path) -> None:
    """A rerun into the same --out times its cells afresh: this script's own earlier run directory goes
    (benchbox itself never writes a new run over one); any other folder there stops the script."""
    manifest = run_dir / "manifest.json"
    if not run_dir.exists():
        return
    suite = json.loads(manifest.read_text()).get("suite", "") if manifest.exists() else ""
    if not str(suite).startswith("gpu-study-"):
        sys.exit(f"{run_dir} exists and is not a run of this script; choose another --out or move it")
    print(f"removing {run_dir} (this script's run from before; its cells are timed afresh)", flush=True)
    shutil.rmtree(run_dir)


def run_study(framework, cfg, args, env, out: Path, networks, extra=(), tag="") -> tuple[float, dict]:
    suite = out / f"study-{framework}{tag}.toml"
    suite.write_text(suite_text(framework, cfg, args.device, args.precision, networks))
    run_dir = out / f"run-{framework}{tag}"
    clear_own_run(run_dir)
    command = ["run", str(suite), "--run-dir", str(run_dir), *extra]
    wall = call(command, env, f"the {framework} study", args.budget_seconds, must_pass=False)
    return wall, cell_times(run_dir)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--scale", type=float, default=1.0, help="1 = the study's size; 0.02 = a CPU rehearsal")
    ap.add_argument("--out", type=Path, default=Path("gpu-study"))
    ap.add_argument("--frameworks", default="torch,keras")
    ap.add_argument("--networks", default=",".join(NETWORKS))
    ap.add_argument("--precision", default="fp32", choices=("fp32", "mixed"), help="precision of the study runs")
    ap.add_argument("--keras-backend", default=None, help="tensorflow | jax | torch (default: the first installed)")
    ap.add_argument("--skip-bench", action="store_true")
    ap.add_argument("--skip-study", action="store_true")
    ap.add_argument("--budget-seconds", type=float, default=None, help="stop each study run after this long")
    ap.add_argument("--packing", default="", help="folds per GPU to try through Ray, e.g. 1,2,4 (needs ray)")
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    cfg = scaled(args.scale) if args.scale < 1 else {**FULL, "counts": [DATASET_1, DATASET_2]}
    networks = [n for n in args.networks.split(",") if n]
    backend = args.keras_backend or next(
        (b for b in ("tensorflow", "jax") if importlib.util.find_spec(b)), "torch"
    )  # jax before torch: Keras's torch backend runs eagerly, ~10x PyTorch's own step time (docs/performance.md)
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    frameworks = [f for f in args.frameworks.split(",") if f]
    h, w = cfg["size"]
    print(
        f"gpu_study: device {args.device}, scale {args.scale}, input {h}x{w}, {cfg['folds']} folds x "
        f"{cfg['epochs']} epochs, batch {cfg['batch']}, Keras backend {backend}",
        flush=True,
    )

    if not args.skip_bench:
        rows = []
        batches = f"1,{cfg['batch']}"
        for framework in frameworks:
            names = [f"{framework}/{n}" for n in networks]
            for amp in (False, True):
                target = out / f"bench-{framework}-{'mixed' if amp else 'fp32'}.csv"
                flags = ["--amp"] if amp else []
                if framework == "torch" and args.device == "cuda":
                    flags.append("--channels-last")
                seconds = "2" if args.scale >= 1 else "0.05"
                call(
                    [
                        "bench",
                        *names,
                        "--device",
                        args.device,
                        "--input",
                        f"{h}x{w}",
                        "--batch-sizes",
                        batches,
                        "--train-batch-size",
                        str(cfg["batch"]),
                        "--min-seconds",
                        seconds,
                        "-o",
                        str(target),
                        *flags,
                    ],
                    env,
                    f"bench {framework} ({'mixed' if amp else 'fp32'})",
                )
                with target.open() as f:
                    rows += list(csv.DictReader(f))
        with (out / "bench.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"bench: {len(rows)} rows -> {out / 'bench.csv'}", flush=True)

    study_rows = []
    walls = {}
    for framework in [] if args.skip_study else frameworks:
        wall, cells = run_study(framework, cfg, args, env, out, networks)
        walls[framework] = wall
        for (data, backbone), (folds, seconds) in sorted(cells.items()):
            study_rows.append(
                {
                    "engine": framework,
                    "dataset": data,
                    "backbone": backbone,
                    "folds": folds,
                    "cell_seconds": round(seconds, 1),
                    "run_wall_seconds": round(wall, 1),
                }
            )
        print(f"study, {framework}: {wall:.1f} s wall for {len(cells)} cells", flush=True)
        if study_rows:
            write_study(out, cfg, args, study_rows)
    for n in [int(v) for v in args.packing.split(",") if v]:
        extra = ["--executor", "ray", "--gpus-per-fold", f"{1 / n:g}", "--cpus-per-fold", "1"]
        if args.device == "cpu":
            extra = ["--executor", "ray", "--cpus-per-fold", "1", "--ray-local-cpus", str(n)]
        wall, cells = run_study("torch", cfg, args, env, out, ["mobilenet_v2"], extra, tag=f"-pack{n}")
        study_rows.append(
            {
                "engine": f"torch, ray {n}/GPU",
                "dataset": "dataset_1+2",
                "backbone": "mobilenet_v2",
                "folds": sum(f for f, _ in cells.values()),
                "cell_seconds": round(sum(s for _, s in cells.values()), 1),
                "run_wall_seconds": round(wall, 1),
            }
        )
        print(f"packing {n} fold(s) per device: {wall:.1f} s wall", flush=True)
    if study_rows:
        print(write_study(out, cfg, args, study_rows))


def write_study(out: Path, cfg: dict, args, study_rows: list[dict]) -> str:
    """study.csv and study.md from the cells timed so far (written after each engine: a run cut short
    still leaves what it measured)."""
    h, w = cfg["size"]
    with (out / "study.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(study_rows[0]))
        writer.writeheader()
        writer.writerows(study_rows)
    lines = [
        f"Study protocol, {cfg['folds']} folds x {cfg['epochs']} epochs, {h}x{w}, batch {cfg['batch']}, "
        f"device {args.device}, precision {args.precision}",
        "",
        "| engine | data set | backbone | folds | cell s (fit + predict) | whole run wall s |",
        "|---|---|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['engine']} | {r['dataset']} | {r['backbone']} | {r['folds']} | {r['cell_seconds']} | "
        f"{r['run_wall_seconds']} |"
        for r in study_rows
    ]
    (out / "study.md").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
