"""Three strategies a third party adds with no edit to benchbox: a split strategy (leave one source
out), an output format (YAML) and a tracker (events as JSON lines). Registered by this package's
hooks exactly as benchbox's own kfold, markdown and mlflow are."""

import json
import time
from pathlib import Path

import numpy as np

from benchbox.contracts import OutputFormat, SplitStrategy, Tracker
from benchbox.errors import BenchboxError


class LeaveOneSourceOut(SplitStrategy):
    """Train on every source (hospital, scanner, data set of origin) but one, test on the one left
    out: one fold per source. Shows whether a model learnt the disease or the site."""

    name = "leave-one-source-out"
    description = "one fold per source: train on all the others, test on it (example plugin)"
    defaults = {"min_images": 1}  # a source with fewer images is never held out on its own

    def check_options(self, options):
        return [] if options["min_images"] >= 1 else [f"min_images: must be at least 1, got {options['min_images']}"]

    def label(self, options):
        return "leave one source out"

    def assign(self, options, labels, groups, sources, seed):
        sources = np.asarray(sources).astype(str)
        names, counts = np.unique(sources, return_counts=True)
        held = [str(s) for s, n in zip(names, counts) if n >= options["min_images"]]
        if len(held) < 2:
            raise BenchboxError(
                f"protocol: leave-one-source-out needs at least two sources with {options['min_images']}+ images; "
                f"the data set has {', '.join(f'{s} ({n})' for s, n in zip(names, counts))}"
            )
        fold = np.full(len(sources), -1, dtype=np.int64)
        for f, source in enumerate(held):
            test = sources == source
            missing = sorted(set(np.asarray(labels)[test].tolist()) - set(np.asarray(labels)[~test].tolist()))
            if missing:
                raise BenchboxError(
                    f"protocol: leaving source {source!r} out leaves class(es) {missing} (indices of the data set's "
                    "classes) with no training image: they come from that source only; choose another protocol "
                    "or add images of them from other sources"
                )
            fold[test] = f
        return fold


class Yaml(OutputFormat):
    name, suffix, run_file = "yaml", ".yaml", "report.yaml"
    description = "every scalar of the summary (or the leaderboard's entries) as YAML (example plugin)"

    def render_run(self, result):
        import yaml

        from benchbox.results.views.report import numeric_frame

        rows = json.loads(numeric_frame(result).to_json(orient="records"))
        return yaml.safe_dump({"run": str(Path(result.run_dir).name), "cells": rows}, sort_keys=False)

    def render_leaderboard(self, ranked, spec, output=None):
        import yaml

        from benchbox.results.views.leaderboard import flat_frame

        rows = json.loads(flat_frame(ranked).to_json(orient="records"))
        return yaml.safe_dump({"metric": spec.name, "entries": rows}, sort_keys=False)


class JsonLines(Tracker):
    """Appends one JSON object per event (start, fold, end) to a file, relative to the run directory."""

    name = "jsonl"
    description = "run events as JSON lines in a file (example plugin)"
    defaults = {"path": "events.jsonl"}

    def check_options(self, options):
        path = options.get("path", "events.jsonl")
        return [] if path.strip() else ["path: must not be empty (leave it out for events.jsonl)"]

    def _write(self, run_dir, options, event):
        path = Path(run_dir) / options.get("path", "events.jsonl")
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **event}) + "\n")

    def start(self, run_dir, manifest, options):
        self._write(
            run_dir, options, {"event": "start", "suite": manifest.get("suite"), "cells": len(manifest["cells"])}
        )

    def fold_end(self, run_dir, record, options):
        self._write(run_dir, options, {"event": "fold", "cell": str(record.cell), "fold": record.fold})

    def end(self, run_dir, result, options):
        self._write(run_dir, options, {"event": "end", "cells": 0 if result is None else len(result.summary)})
