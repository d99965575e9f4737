"""Whether two run directories hold the same results: every fold record's predictions, probabilities,
labels and ids compared bit for bit (timings, dates and the environment left out).

    python tools/compare_runs.py RUN_A RUN_B      # exits 1 and names each difference
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

#: fields that say when, how fast or where a fold ran, not what it computed
VOLATILE = {"train_seconds", "predict_seconds", "infer_images_per_sec", "info", "written_at", "suite_digest"}


def results(run: Path) -> dict[str, dict]:
    out = {}
    for path in sorted((run / "folds").glob("*.json")):
        record = json.loads(path.read_text())
        out[path.name] = {k: v for k, v in record.items() if k not in VOLATILE}
    return out


def differences(a: Path, b: Path) -> list[str]:
    ra, rb = results(a), results(b)
    found = [f"{name}: only in {a}" for name in sorted(set(ra) - set(rb))]
    found += [f"{name}: only in {b}" for name in sorted(set(rb) - set(ra))]
    for name in sorted(set(ra) & set(rb)):
        for key in sorted(set(ra[name]) | set(rb[name])):
            if ra[name].get(key) != rb[name].get(key):
                found.append(f"{name}: {key} differs")
    return found


if __name__ == "__main__":
    a, b = map(Path, sys.argv[1:3])
    diff = differences(a, b)
    print("\n".join(diff) if diff else f"identical: {len(results(a))} fold records, predictions bit for bit")
    sys.exit(1 if diff else 0)
