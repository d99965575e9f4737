"""Leaderboards across runs: collect run directories (any suites, machines, dates), rank
dataset x backbone entries by a metric with its interval, and show provenance. Entries whose data
set composition, protocol or input size differ are never ranked together: each comparable group
gets its own ranking."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import pandas as pd

from benchbox.errors import BenchboxError
from benchbox.store import RunStore
from benchbox.summary import summarize

METRICS = ("accuracy_3class", "accuracy_2class", "sensitivity", "specificity", "auc", "macro_f1", "balanced_accuracy")
FORMATS = ("markdown", "html", "csv", "json")


def collect(run_dirs, registry, dataset: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """One row per dataset x backbone entry of every run, with provenance and comparability key."""
    rows, problems = [], []
    for run_dir in run_dirs:
        store = RunStore(run_dir)
        try:
            manifest = store.manifest()
            summary, cell_problems = summarize(store, registry)
        except BenchboxError as exc:
            problems.append(str(exc))
            continue
        problems += [f"{run_dir}: {p}" for p in cell_problems]
        env = manifest.get("environment", {})
        cells = {(c["dataset"], c["backbone"]): c for c in manifest.get("cells", [])}
        probe_notes = _probe_notes(store, manifest, summary)
        for _, r in summary.iterrows():
            if "@" in r["dataset"]:  # a probe's cell qualifies its entry; it is not an entry itself
                continue
            if dataset and r["dataset"] != dataset and manifest["datasets"].get(r["dataset"], {}).get("plugin") != dataset:
                continue
            cell = cells.get((r["dataset"], r["backbone"]), {})
            dmeta = manifest["datasets"].get(r["dataset"], {})
            opts = cell.get("options", {})
            composition = f"{dmeta.get('plugin', r['dataset'])} " + ", ".join(
                f"{k} {v}" for k, v in sorted(dmeta.get("class_counts", {}).items()))
            size = "x".join(str(v) for v in opts.get("input_size", []))
            rows.append({**r.to_dict(), "run": Path(run_dir).name, "run_dir": str(run_dir),
                         "suite": manifest.get("suite"), "protocol": manifest.get("protocol_label"),
                         "grouped": bool(manifest.get("protocol", {}).get("grouped")),
                         "weights": opts.get("weights", ""), "input_size": size, "composition": composition,
                         "hardware": ", ".join(env.get("gpus") or []) or env.get("cpu", ""),
                         "date": manifest.get("started_at", ""), "benchbox": env.get("benchbox", ""),
                         "probes": probe_notes.get((r["dataset"], r["backbone"]), ""),
                         "group": f"{composition} | {manifest.get('protocol_label')} | input {size}"})
    if not rows:
        raise BenchboxError("no leaderboard entries: " + ("; ".join(problems) if problems else "no runs given"))
    return pd.DataFrame(rows), problems


def _probe_notes(store, manifest, summary) -> dict:
    """(dataset, backbone) -> the shortcut verdicts of that entry, one line each."""
    if not manifest.get("probes"):
        return {}
    from benchbox.breakdown import external
    from benchbox.shortcuts import shortcut_tables

    records, _ = store.read_records()
    notes = {}
    for title, _, verdicts in shortcut_tables(summary, manifest, external(records, manifest)):
        ds, bb = title.removeprefix("Shortcut report: ").split(" x ", 1)
        notes[(ds, bb)] = " | ".join(f"{v.probe}: {'SHORTCUT' if v.fires else 'ok'} — {v.text}" for v in verdicts)
    return notes


def rank(entries: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rank within each comparable group, best first; entries without the metric go last, unranked."""
    if metric not in METRICS:
        raise BenchboxError(f"--metric {metric!r}: choose one of {', '.join(METRICS)}")
    if metric not in entries.columns:
        raise BenchboxError(f"no run computed {metric!r} (add the evaluator that does to the suite)")
    out = []
    for group, sub in entries.groupby("group", sort=True):
        sub = sub.sort_values(metric, ascending=False, na_position="last").copy()
        sub["rank"] = [i + 1 if not pd.isna(v) else None for i, v in enumerate(sub[metric])]
        out.append(sub)
    return pd.concat(out, ignore_index=True)


def _value(r, metric) -> str:
    v = r.get(metric)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    scale = 1 if metric == "auc" else 100
    lo, hi = r.get(f"{metric}_ci_low"), r.get(f"{metric}_ci_high")
    ci = "" if lo is None or pd.isna(lo) else f" [{scale * lo:.1f}–{scale * hi:.1f}]" if scale == 100 else f" [{lo:.3f}–{hi:.3f}]"
    return (f"{scale * v:.2f}" if scale == 100 else f"{v:.3f}") + ci


COLUMNS = ["rank", "backbone", "framework", "value", "weights", "suite", "run", "grouped", "hardware", "date", "benchbox",
           "probes"]


def table_rows(ranked: pd.DataFrame, metric: str):
    for group, sub in ranked.groupby("group", sort=False):
        yield group, [{"rank": "" if pd.isna(r["rank"]) else int(r["rank"]), "backbone": f"{r['backbone']} ({r['plugin']})",
                       "framework": r["framework"], "value": _value(r, metric), "weights": r["weights"],
                       "suite": r["suite"], "run": r["run"], "grouped": "yes" if r["grouped"] else "no",
                       "hardware": r["hardware"], "date": str(r["date"])[:16], "benchbox": r["benchbox"],
                       "probes": r.get("probes", "") or ""}
                      for _, r in sub.iterrows()]


def render(ranked: pd.DataFrame, metric: str, fmt: str) -> str:
    if fmt not in FORMATS:
        raise BenchboxError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt in ("csv", "json"):
        flat = ranked.drop(columns=[c for c in ranked.columns if ranked[c].map(lambda v: isinstance(v, (list, dict))).any()])
        return flat.to_csv(index=False) if fmt == "csv" else flat.to_json(orient="records", indent=1)
    if fmt == "markdown":
        from tabulate import tabulate

        parts = [f"# benchbox leaderboard — {metric}\n",
                 "Entries are ranked only against entries with the same data set composition, protocol and input size.\n"]
        for group, rows in table_rows(ranked, metric):
            parts.append(f"## {group}\n")
            parts.append(tabulate(pd.DataFrame(rows), headers="keys", tablefmt="github", showindex=False) + "\n")
        return "\n".join(parts)
    return render_html(ranked, metric)


def _embedded_plots(ranked: pd.DataFrame) -> list[tuple[str, str]]:
    out = []
    for run_dir in dict.fromkeys(ranked["run_dir"]):
        for png in sorted((Path(run_dir) / "plots").glob("*.png")):
            out.append((f"{Path(run_dir).name}: {png.stem}", base64.b64encode(png.read_bytes()).decode()))
    return out


SORT_JS = """
document.querySelectorAll('table.lb th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0], rows = Array.from(body.rows);
    var asc = th.dataset.asc !== 'true'; th.dataset.asc = asc;
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v || a.cells[col].textContent, y = b.cells[col].dataset.v || b.cells[col].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def render_html(ranked: pd.DataFrame, metric: str) -> str:
    """One self-contained page: inline CSS and JS, plots embedded as data URIs, no network."""
    e = html.escape
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             f"<title>benchbox leaderboard — {e(metric)}</title><style>",
             "body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin-bottom:2em}"
             "th,td{border:1px solid #ccc;padding:4px 8px;font-size:14px}th{background:#f0f0f0;cursor:pointer}"
             "figure{display:inline-block;margin:8px}img{max-width:420px}</style></head><body>",
             f"<h1>benchbox leaderboard — {e(metric)}</h1>",
             "<p>Ranked only against entries with the same data set composition, protocol and input size. "
             "Values: pooled over folds, with 95% intervals. Click a column to sort.</p>"]
    for group, rows in table_rows(ranked, metric):
        parts.append(f"<h2>{e(group)}</h2><table class='lb'><thead><tr>")
        parts += [f"<th>{e(c)}</th>" for c in COLUMNS]
        parts.append("</tr></thead><tbody>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td data-v='{e(str(row[c]).split(' ')[0])}'>{e(str(row[c]))}</td>"
                                          for c in COLUMNS) + "</tr>")
        parts.append("</tbody></table>")
    plots = _embedded_plots(ranked)
    if plots:
        parts.append("<h2>Plots</h2>")
        parts += [f"<figure><img alt='{e(t)}' src='data:image/png;base64,{b}'><figcaption>{e(t)}</figcaption></figure>"
                  for t, b in plots]
    parts.append(f"<script>{SORT_JS}</script></body></html>")
    return "\n".join(parts)
