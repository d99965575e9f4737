"""A run's report as one self-contained HTML page, rendered from its RunResult: the comparison
table with intervals (from the declared MetricSpecs), the sections plugins add, the run's plots
embedded as data URIs, the per-fold spread, problems and failures, and the provenance (suite text,
versions, hardware, seed, data fingerprints).

Inline CSS and a few lines of vanilla JavaScript (click a column header to sort); a
Content-Security-Policy forbids every network request, so the page works offline and cannot leak.
Every name (suite, data set, backbone, section, problem) is escaped."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd

from benchbox.execute.records import DataKey
from benchbox.results.summary import RunResult
from benchbox.results.views.format import header, interval_note, missing, number, value
from benchbox.results.views.report import comparison_frame, note

E = html.escape

CSS = """
:root{--line:#d0d4da;--head:#eef1f5;--muted:#5b6470;--flag:#fde2e1;--flagtext:#8a1c13}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1c2430;background:#fff}
main{max-width:1320px;margin:0 auto;padding:1.2em 2em 3em}
h1{font-size:1.55em;margin:.4em 0 .2em}h2{font-size:1.2em;margin:1.8em 0 .4em;border-bottom:2px solid var(--line)}
h3{font-size:1em;margin:1.2em 0 .3em}
p.lead{color:var(--muted);margin:.2em 0 1em}
nav{font-size:.9em;margin:.6em 0 1em;line-height:1.8}nav a{margin-right:1em;white-space:nowrap}
.scroll{overflow-x:auto;margin-bottom:.6em}
table{border-collapse:collapse;font-size:13.5px;margin:.3em 0}
th,td{border:1px solid var(--line);padding:4px 8px;vertical-align:top;text-align:left}
th{background:var(--head);cursor:pointer;user-select:none}
th:after{content:"\\00a0\\2195";color:#9aa3ad;font-size:.8em}
th[data-asc=true]:after{content:"\\00a0\\2191";color:#1c2430}th[data-asc=false]:after{content:"\\00a0\\2193";color:#1c2430}
th.blank{cursor:default}th.blank:after{content:none}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.name{white-space:nowrap;font-weight:600}
td.flag{background:var(--flag);color:var(--flagtext);font-weight:700}
.ci{display:block;color:var(--muted);font-size:.86em;white-space:nowrap}
ul.notes{color:var(--muted);font-size:.9em;margin:.2em 0 1em;padding-left:1.4em}
.problems li{color:#8a4b00}
figure{display:inline-block;margin:6px 12px 12px 0;vertical-align:top;max-width:100%}
figure img{max-width:100%;border:1px solid var(--line)}
figcaption{font-size:.85em;color:var(--muted);max-width:560px;word-break:break-all}
pre{background:#f6f8fa;border:1px solid var(--line);padding:.8em;overflow-x:auto;font-size:12.5px}
dl.kv{display:grid;grid-template-columns:max-content auto;gap:2px 16px;font-size:.92em}
dl.kv dt{color:var(--muted)}dl.kv dd{margin:0;word-break:break-word}
footer{margin-top:3em;color:var(--muted);font-size:.85em}
"""

# Click a header to sort its table; numbers (data-v, else the cell's first number) sort numerically.
SORT_JS = """
document.querySelectorAll('table.sortable thead th:not(.blank)').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0], col = th.cellIndex;
    var asc = th.dataset.asc !== 'true';
    table.querySelectorAll('thead th').forEach(function (h) { delete h.dataset.asc; });
    th.dataset.asc = asc;
    function key(row) {
      var cell = row.cells[col];
      if (!cell) return '';
      return cell.dataset.v !== undefined ? cell.dataset.v : cell.textContent.trim();
    }
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

# the core's own plot kinds (views/plots.py); a plugin's are titled by its Section's ``plots``, else by file prefix
PLOT_GROUPS = {
    "roc": "ROC curves",
    "folds": "Per-fold metrics",
    "cross_dataset": "Cross-dataset matrix",
}

NAME_COLUMNS = {"data", "dataset", "backbone", "positive", "source", "external", "protocol", "probe", ""}


def _sort_key(text: str) -> str:
    """The number a cell starts with (for sorting), else its text."""
    head = str(text).strip().split(" ")[0].replace(",", "").rstrip("%")
    try:
        float(head)
        return head
    except ValueError:
        return str(text)


def _cell(text, name: bool = False, sort: str | None = None, raw_html: str | None = None) -> str:
    text = "" if text is None or (isinstance(text, float) and pd.isna(text)) else str(text)
    key = _sort_key(text) if sort is None else sort
    numeric = not name and _is_number(key)
    classes = ["name"] if name else (["num"] if numeric else [])
    if text.strip().upper() in ("YES", "SHORTCUT"):
        classes.append("flag")
    attr = f" class='{' '.join(classes)}'" if classes else ""
    return f"<td{attr} data-v='{E(key)}'>{raw_html if raw_html is not None else E(text)}</td>"


def _is_number(text: str) -> bool:
    try:
        float(str(text).replace(",", "").rstrip("%"))
        return True
    except ValueError:
        return False


def table(frame: pd.DataFrame, caption: str = "") -> str:
    """Any DataFrame as a sortable table; columns of names never wrap."""
    if frame is None or not len(frame.columns):
        return ""
    # an empty header (a confusion matrix's corner) is not a column to sort by: no arrow, no click
    head = "".join(f"<th>{E(str(c))}</th>" if str(c).strip() else "<th class='blank'></th>" for c in frame.columns)
    names = [str(c).strip().lower() in NAME_COLUMNS for c in frame.columns]
    body = []
    for _, row in frame.iterrows():
        body.append("<tr>" + "".join(_cell(v, name=n) for v, n in zip(row.tolist(), names)) + "</tr>")
    cap = f"<caption>{E(caption)}</caption>" if caption else ""
    return (
        f"<div class='scroll'><table class='sortable'>{cap}<thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def comparison_table(result: RunResult) -> str:
    """The comparison table: one row per cell, each declared metric with its interval and fold
    spread stacked under the value (so a narrow window wraps numbers, never names)."""
    frame = comparison_frame(result)  # the same columns as the terminal and markdown tables
    specs = {header(spec): spec for spec in result.metrics if spec.table}
    rows = [r.to_dict() for _, r in result.summary.iterrows()]
    head = "".join(f"<th>{E(str(c))}</th>" for c in frame.columns)
    body = []
    for row, (_, shown) in zip(rows, frame.iterrows()):
        cells = []
        for col, text in shown.items():
            spec = specs.get(col)
            if spec is not None:
                v = row.get(spec.name)
                main = value(row, spec, interval=False, spread=False)
                extra = value(row, spec)[len(main) :].strip() if not missing(v) else ""
                sort = "" if missing(v) else repr(float(v))
                inner = E(main) + (f" <span class='ci'>{E(extra)}</span>" if extra else "")
                cells.append(_cell(main, sort=sort, raw_html=inner))
            else:
                cells.append(_cell(text, name=col in ("Data", "Backbone")))
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f"<div class='scroll'><table class='sortable' id='comparison'><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def fold_frame(result: RunResult) -> pd.DataFrame:
    """One row per fold of every cell: sizes, harness timings and each declared metric's fold value."""
    rows = {r["cell"]: r for _, r in result.summary.iterrows()}
    out = []
    for cell, recs in result.cells.items():
        summary = rows.get(cell, {})
        for i, rec in enumerate(recs):
            line = {
                "Data": cell.label,
                "Backbone": cell.backbone,
                "Fold": rec.fold,
                "Train images": rec.n_train,
                "Test images": rec.n_test,
            }
            for spec in result.metrics:
                folds = summary.get(f"{spec.name}_folds") if len(summary) else None
                if isinstance(folds, list) and len(folds) == len(recs):
                    v = folds[i]
                    line[header(spec)] = "n/a" if missing(v) else f"{spec.scale * v:.{spec.digits}f}"
            line["Train s"] = number(rec.train_seconds)
            line["Infer img/s"] = number(rec.infer_images_per_sec)
            out.append(line)
    return pd.DataFrame(out)


def spread_frame(result: RunResult) -> pd.DataFrame:
    """Per cell and metric with per-fold values: min, max, mean and standard deviation across folds."""
    out = []
    for _, r in result.summary.iterrows():
        for spec in result.metrics:
            folds = r.get(f"{spec.name}_folds")
            if not isinstance(folds, list):
                continue
            vals = [spec.scale * v for v in folds if not missing(v)]
            if not vals:
                continue
            d = spec.digits
            mean = sum(vals) / len(vals)
            sd = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else float("nan")
            out.append(
                {
                    "Data": r["data"],
                    "Backbone": r["backbone"],
                    "Metric": header(spec),
                    "Folds": len(vals),
                    "Min": f"{min(vals):.{d}f}",
                    "Max": f"{max(vals):.{d}f}",
                    "Mean": f"{mean:.{d}f}",
                    "SD": "n/a" if sd != sd else f"{sd:.{d}f}",
                }
            )
    return pd.DataFrame(out)


def plot_files(result: RunResult) -> list[Path]:
    directory = Path(result.run_dir) / "plots"
    return sorted(p for p in directory.glob("*.png") if not p.name.endswith(".tmp.png")) if directory.is_dir() else []


def figures(paths: list[Path], titles: dict[str, str] | None = None) -> list[tuple[str, list[tuple[str, str]]]]:
    """[(group title, [(caption, base64 PNG)])], the core's plot kinds first, then those ``titles`` (file
    prefix -> title, from the plugins' sections) names, in their order."""
    titles = {**PLOT_GROUPS, **{k: v for k, v in (titles or {}).items() if k not in PLOT_GROUPS}}
    groups: dict[str, list[tuple[str, str]]] = {}
    for path in paths:
        prefix = path.stem.split("__")[0]
        title = titles.get(prefix, prefix.replace("_", " ").replace("-", " ").capitalize())
        try:
            data = base64.b64encode(path.read_bytes()).decode()
        except OSError:
            continue
        groups.setdefault(title, []).append((path.name, data))
    order = list(titles.values())
    return sorted(groups.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0]))


def _kv(items) -> str:
    rows = "".join(f"<dt>{E(str(k))}</dt><dd>{E(str(v))}</dd>" for k, v in items if v not in (None, "", [], {}))
    return f"<dl class='kv'>{rows}</dl>"


def data_frame(manifest: dict) -> pd.DataFrame:
    rows = []
    for alias, meta in (manifest.get("datasets") or {}).items():
        rows.append(
            {
                "Data": DataKey(meta.get("dataset") or meta.get("probe_of") or alias, meta.get("probe") or "").label,
                "Plugin": meta.get("plugin", ""),
                "Images": meta.get("images", ""),
                "Patients": meta.get("patients", ""),
                "Classes": ", ".join(f"{k} {v}" for k, v in (meta.get("class_counts") or {}).items()),
                "Positive": meta.get("positive_class", ""),
                "Fingerprint": meta.get("fingerprint", ""),
                "Split fingerprint": meta.get("split_fingerprint") or "",
                "Notes": " ".join(list(meta.get("notes") or []) + list(meta.get("warnings") or [])),
            }
        )
    return pd.DataFrame(rows)


def cells_frame(manifest: dict) -> pd.DataFrame:
    rows = []
    for c in manifest.get("cells") or []:
        rows.append(
            {
                "Data": c.get("dataset", "") + (f" [{c['probe']}]" if c.get("probe") else ""),
                "Backbone": c.get("backbone", ""),
                "Plugin": c.get("plugin", ""),
                "Framework": c.get("framework", ""),
                "Options": json.dumps(c.get("options", {}), sort_keys=True, default=str),
            }
        )
    return pd.DataFrame(rows)


def provenance(result: RunResult) -> str:
    m = result.manifest
    env = m.get("environment") or {}
    training = m.get("training") or {}
    parts = [
        "<h3>Run</h3>",
        _kv(
            [
                ("run directory", Path(result.run_dir).name),
                ("suite", m.get("suite", "")),
                ("suite digest", m.get("suite_digest", "")),
                ("status", m.get("status", "")),
                ("started", m.get("started_at", "")),
                ("finished", m.get("finished_at", "")),
                ("seed", m.get("seed", "")),
                ("protocol", m.get("protocol_label", "")),
                ("training", ", ".join(f"{k} {v}" for k, v in training.items())),
                ("evaluators", ", ".join(m.get("evaluators") or [])),
                ("timing", m.get("timing", "")),
            ]
        ),
        "<h3>Machine and versions</h3>",
        _kv(
            [
                ("benchbox", env.get("benchbox", "")),
                ("python", env.get("python", "")),
                ("os", env.get("os", "")),
                ("machine", env.get("machine", "")),
                ("cpu", env.get("cpu", "")),
                ("cpu count", env.get("cpu_count", "")),
                ("gpus", ", ".join(env.get("gpus") or []) or "none"),
                *sorted((env.get("packages") or {}).items()),
            ]
        ),
    ]
    data = data_frame(m)
    if len(data):
        parts += ["<h3>Data sets</h3>", table(data)]
    cells = cells_frame(m)
    if len(cells):
        parts += ["<h3>Cells</h3>", table(cells)]
    suite_file = Path(result.run_dir) / "suite.toml"
    try:
        suite_text = suite_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        suite_text = ""
    if suite_text:
        parts += ["<h3>Suite file (suite.toml, verbatim)</h3>", f"<pre>{E(suite_text, quote=False)}</pre>"]
    elif m.get("suite_as_run"):
        parts += [
            "<h3>Suite as run (from the manifest)</h3>",
            f"<pre>{E(json.dumps(m['suite_as_run'], indent=1, default=str), quote=False)}</pre>",
        ]
    return "\n".join(parts)


def render_html(result: RunResult, plots: list[Path] | None = None) -> str:
    """The whole page. ``plots``: PNG files to embed (default: the run directory's plots/)."""
    title = result.title or "benchbox report"
    m = result.manifest
    toc: list[tuple[str, str]] = [("comparison", "Comparison")]
    body: list[str] = []

    body += [
        "<h2 id='comparison'>Comparison</h2>",
        comparison_table(result),
        f"<ul class='notes'><li>{E(note(result))}</li><li>Click a column header to sort.</li></ul>",
    ]

    sections = [s for s in result.sections if getattr(s, "in_report", True)]
    for i, section in enumerate(sections):
        anchor = f"section-{i}"
        if i == 0:
            toc.append((anchor, "Sections"))
        body.append(f"<h2 id='{anchor}'>{E(section.title)}</h2>")
        body.append(table(section.table))
        if section.notes:
            body.append("<ul class='notes'>" + "".join(f"<li>{E(str(n))}</li>" for n in section.notes) + "</ul>")

    spread = spread_frame(result)
    folds = fold_frame(result)
    if len(spread) or len(folds):
        toc.append(("folds", "Per-fold spread"))
        body.append("<h2 id='folds'>Per-fold spread</h2>")
        if len(spread):
            body.append(table(spread))
        if len(folds):
            body += ["<h3>Every fold</h3>", table(folds)]

    titles = {k: v for section in result.sections for k, v in (getattr(section, "plots", None) or {}).items()}
    groups = figures(plot_files(result) if plots is None else [Path(p) for p in plots], titles)
    if groups:
        toc.append(("plots", "Plots"))
        body.append("<h2 id='plots'>Plots</h2>")
        for group, images in groups:
            body.append(f"<h3>{E(group)}</h3>")
            body += [
                f"<figure><img alt='{E(name)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{E(name)}</figcaption></figure>"
                for name, data in images
            ]

    problems = list(result.problems) + [
        f"failed: {f['cell']} fold {f.get('fold', '?')}: {f.get('error', '')}"
        if f.get("cell")
        else f"failed: {f.get('error', '')}"
        for f in result.failures
    ]
    if problems:
        toc.append(("problems", f"Problems ({len(problems)})"))
        body.append("<h2 id='problems'>Problems and failures</h2>")
        body.append("<ul class='problems'>" + "".join(f"<li>{E(str(p))}</li>" for p in problems) + "</ul>")

    toc.append(("provenance", "Provenance"))
    body += ["<h2 id='provenance'>Provenance</h2>", provenance(result)]

    description = (m.get("suite_as_run") or {}).get("description") if isinstance(m.get("suite_as_run"), dict) else ""
    interval = interval_note(result.metrics)
    lead = " · ".join(
        E(str(p))
        for p in (description, f"seed {m.get('seed')}", m.get("started_at"), interval)
        if p and p != "seed None"
    )
    nav = "".join(f"<a href='#{a}'>{E(t)}</a>" for a, t in toc)
    return "\n".join(
        [
            "<!DOCTYPE html>",
            "<html lang='en'><head><meta charset='utf-8'>",
            f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">",
            "<meta name='viewport' content='width=device-width, initial-scale=1'>",
            "<link rel='icon' href='data:,'>",
            f"<title>{E(title)} — benchbox report</title>",
            f"<style>{CSS}</style></head><body><main>",
            f"<h1>{E(title)}</h1>",
            f"<p class='lead'>{lead}</p>" if lead else "",
            f"<nav>{nav}</nav>",
            *body,
            f"<footer>benchbox report of {E(Path(result.run_dir).name)}, rendered from its fold records; "
            "self-contained (no network).</footer>",
            f"</main><script>{SORT_JS}</script></body></html>",
        ]
    )
