"""Boards: a directory of verified bundles that builds into a static site (docs/leaderboard.md).

    BOARD_DIR/
        board.json                          {"format": "benchbox-board/1"}
        entries/<claim>-<predictions>.bbx.zip   one bundle per entry, never overwritten

`benchbox board add BOARD_DIR BUNDLE...` verifies each bundle (``benchbox verify``) and copies it in,
named by two digests: the run it claims to be (suite digest, start time, seed, data fingerprints,
cells) and its predictions (every fold's labels and probabilities, whatever its ids are called). A
second bundle claiming an entry's run with other predictions is refused (one of them was altered);
with the same predictions it is already on the board. `benchbox board build BOARD_DIR -o SITE_DIR`
re-scores every entry from its predictions and writes a static site: an index of the comparable
groups (and a critical-difference diagram when backbones meet on several data sets), one page per
group (ranks with ties, intervals, paired p-values, the significance matrix as a heat map) and one
page per entry (provenance, fingerprints, confusion matrix, calibration).
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchbox.errors import BenchboxError
from benchbox.execute.store import RunStore, json_text, write_atomic
from benchbox.results.bundle import SUFFIX, BundleError, opened

BOARD_FORMAT = "benchbox-board/1"
BOARD_INDEX = "board.json"
SITE_MARK = ".benchbox-site"
ENTRY = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})" + re.escape(SUFFIX) + "$")


@dataclass
class AddResult:
    added: list[tuple[Path, Path]] = field(default_factory=list)  # (bundle, entry file)
    present: list[tuple[Path, Path]] = field(default_factory=list)  # already on the board
    refused: list[tuple[Path, str]] = field(default_factory=list)  # (bundle, reason)


def claim_digest(manifest: dict) -> str:
    """What run a bundle claims to be: its suite, start, seed, data fingerprints and cells (not its ids'
    names: a bundle with hashed ids claims the same run)."""
    datasets = {k: (v or {}).get("fingerprint") for k, v in (manifest.get("datasets") or {}).items()}
    cells = [
        {k: c.get(k) for k in ("dataset", "probe", "backbone", "plugin", "options")}
        for c in manifest.get("cells") or []
        if isinstance(c, dict)
    ]
    what = {
        "suite_digest": manifest.get("suite_digest"),
        "started_at": manifest.get("started_at"),
        "seed": manifest.get("seed"),
        "datasets": datasets,
        "cells": cells,
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def predictions_digest(store: RunStore) -> str:
    """A digest of every fold's true labels and probabilities, in fold order (ids left out)."""
    records, _ = store.read_records()
    h = hashlib.sha256()
    for r in sorted(records, key=lambda r: (r.cell.slug, r.fold)):
        h.update(f"{r.cell.slug}|{r.fold}|".encode())
        h.update(np.asarray(r.y_true, dtype=np.int64).tobytes())
        h.update(np.round(np.asarray(r.probabilities, dtype=float), 9).tobytes())
    return h.hexdigest()[:16]


def entries(board: Path) -> list[Path]:
    return sorted((Path(board) / "entries").glob(f"*{SUFFIX}"))


def add(board, bundles, registry, data_dir=None) -> AddResult:
    """Verify each bundle and add it to the board; refuse (naming the reason) any that fails verification,
    cannot be read, or claims an entry's run with other predictions. Nothing on the board is overwritten."""
    from benchbox.results.verify import verify_run

    board = Path(board)
    if board.exists() and not board.is_dir():
        raise BenchboxError(f"{board}: is a file; name a folder for the board (it is created if missing)")
    index = board / BOARD_INDEX
    if index.exists():
        data = _json(index)
        if not isinstance(data, dict) or data.get("format") != BOARD_FORMAT:
            raise BenchboxError(f"{index}: not a benchbox board ({BOARD_FORMAT}); name another folder")
    elif board.exists() and any(p.name != ".git" for p in board.iterdir()):
        raise BenchboxError(
            f"{board}: holds files but no {BOARD_INDEX}, so it is not a board; name an empty or new folder"
        )
    result = AddResult()
    for bundle in map(Path, bundles):
        if not bundle.is_file():
            result.refused.append((bundle, "not a bundle file (write one with `benchbox bundle RUN_DIR -o FILE`)"))
            continue
        try:
            with opened(bundle) as run_dir:
                verdict = verify_run(run_dir, registry, data_dir, source=bundle)
                store = RunStore(run_dir)
                claim, preds = claim_digest(store.manifest()), predictions_digest(store)
        except BenchboxError as exc:
            result.refused.append((bundle, str(exc)))
            continue
        if not verdict.passed:
            more = (
                f" (and {len(verdict.failures) - 1} more: `benchbox verify {bundle}`)"
                if len(verdict.failures) > 1
                else ""
            )
            result.refused.append((bundle, f"fails verification: {verdict.failures[0]}{more}"))
            continue
        same_claim = [p for p in entries(board) if p.name.startswith(claim + "-")]
        name = f"{claim}-{preds}{SUFFIX}"
        if any(p.name == name for p in same_claim):
            result.present.append((bundle, board / "entries" / name))
            continue
        if same_claim:
            result.refused.append(
                (
                    bundle,
                    f"claims the run of entry {same_claim[0].name} (same suite, start, seed, data and cells) with "
                    "different predictions: one of the two was altered; the entry is kept",
                )
            )
            continue
        target = board / "entries" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not index.exists():
            write_atomic(index, json_text({"format": BOARD_FORMAT}) + "\n")
        try:
            with open(target, "xb") as out, open(bundle, "rb") as src:  # "x": never over an entry
                shutil.copyfileobj(src, out)
        except FileExistsError:
            result.present.append((bundle, target))
            continue
        result.added.append((bundle, target))
    return result


def _json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# --- the site ---------------------------------------------------------------------------------------
CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1300px;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;font-size:14px}"
    "th{background:#f0f0f0}td.num{text-align:right}img{max-width:100%;height:auto}"
    "code{font-size:13px}p.note{color:#555;font-size:13px}nav a{margin-right:1em}"
)


def _page(title: str, body: list[str], up: str = "") -> str:
    e = html.escape
    nav = f"<nav><a href='{e(up)}index.html'>board index</a></nav>" if up is not None else ""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src 'self'; "
        "style-src 'unsafe-inline'\">"
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>{nav}<h1>{e(title)}</h1>"
        + "\n".join(body)
        + "</body></html>\n"
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", str(text)).strip("-").lower()[:60] or "x"


def _table(header: list[str], rows: list[list[str]], raw_cols: tuple[int, ...] = ()) -> str:
    e = html.escape
    head = "<thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr></thead>" if any(header) else ""
    out = [f"<table>{head}<tbody>"]
    for row in rows:
        out.append(
            "<tr>" + "".join(f"<td>{c if i in raw_cols else e(str(c))}</td>" for i, c in enumerate(row)) + "</tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def build(board, site, registry, metric: str | None = None, jobs: int | None = None) -> dict:
    """Write the static site of a board; returns counts (entries, groups, pages) and the problems met.
    ``jobs``: processes that re-score the entries (default: the cores free now)."""
    from benchbox.results.views.leaderboard import choose_metric, collect_sources, rank

    board, site = Path(board), Path(site)
    files = entries(board)
    if not files:
        raise BenchboxError(f"{board}: no entries (add bundles with `benchbox board add {board} BUNDLE...`)")
    _prepare_site(site)
    frame, more, metrics = collect_sources(files, registry, jobs=jobs)
    spec = choose_metric(metrics, metric)
    ranked = rank(frame, spec)
    pages = _write_site(site, ranked, spec, metrics, more)
    return {"entries": len(files), "groups": int(ranked["group"].nunique()), "pages": pages, "problems": more}


def _prepare_site(site: Path) -> None:
    if site.exists() and not site.is_dir():
        raise BenchboxError(f"-o {site}: is a file; name a folder for the site")
    if site.is_dir() and any(site.iterdir()) and not (site / SITE_MARK).exists():
        raise BenchboxError(
            f"-o {site}: holds files that are not a board site; name an empty or new folder (a site built "
            "before is rebuilt in place)"
        )
    if site.is_dir():
        for sub in ("groups", "entries", "img"):
            shutil.rmtree(site / sub, ignore_errors=True)
    for sub in ("groups", "entries", "img"):
        (site / sub).mkdir(parents=True, exist_ok=True)
    (site / SITE_MARK).write_text("built by benchbox board build\n")


def _entry_id(row) -> str:
    return _slug(f"{Path(str(row['run_dir'])).name.split('.')[0][:33]}-{row['data']}-{row['backbone']}")


def _write_site(site: Path, ranked: pd.DataFrame, spec, metrics: dict, problems: list[str]) -> int:
    from benchbox.results.views.format import value
    from benchbox.results.views.leaderboard import format_p, paired_p_text, pooled_p_text

    e = html.escape
    ranked = ranked.assign(entry_id=[_entry_id(r) for _, r in ranked.iterrows()])
    groups = list(dict.fromkeys(ranked["group"]))
    group_ids = {g: f"g{i + 1:03d}-{_slug(g)[:40]}" for i, g in enumerate(groups)}
    pages = 0
    index = [
        f"<p>{len(ranked)} entries in {len(groups)} comparable group(s), ranked by {e(spec.label)} "
        f"({'higher' if spec.higher_is_better else 'lower'} is better), every figure re-scored from the entries' "
        "stored predictions. Entries on the same images and the same folds (equal data and split fingerprints) "
        "form a <em>paired group</em> and are compared by paired tests; a rank such as <code>1 (tied with 2)</code> "
        "means no test told them apart (Holm-adjusted p &ge; 0.05).</p>",
        "<h2>Groups</h2>",
        _table(
            ["group", "entries", "paired groups", "best"],
            [
                [
                    f"<a href='groups/{group_ids[g]}.html'>{e(g)}</a>",
                    str(len(sub)),
                    str(sub["paired_group"].replace("", np.nan).nunique()),
                    e(f"{sub.iloc[0]['backbone']} ({value(sub.iloc[0].to_dict(), spec, spread=False)})"),
                ]
                for g, sub in ranked.groupby("group", sort=False)
            ],
            raw_cols=(0, 3),
        ),
    ]
    cd = _critical_difference(ranked, spec, site)
    if cd:
        index += cd
    if problems:
        index.append("<h2>Problems</h2><ul>" + "".join(f"<li>{e(p)}</li>" for p in problems) + "</ul>")
    for group, sub in ranked.groupby("group", sort=False):
        gid = group_ids[group]
        rows = []
        for _, r in sub.iterrows():
            rows.append(
                [
                    e(str(r.get("paired_rank") or ("" if pd.isna(r["rank"]) else int(r["rank"])))),
                    f"<a href='../entries/{r['entry_id']}.html'>{e(str(r['backbone']))}</a>",
                    e(str(r["framework"])),
                    e(value(r.to_dict(), spec, spread=True)),
                    e(paired_p_text(r)),
                    e(pooled_p_text(r)),
                    e(str(r.get("paired_group") or "")),
                    e(str(r["run"])),
                ]
            )
        body = [
            f"<p>Ranked by {e(spec.label)}: value pooled over folds [95% interval] ±fold spread. <em>p vs best</em>: "
            "corrected resampled t-test over the folds (Nadeau &amp; Bengio 2003), Holm-adjusted; <em>p pooled</em>: "
            "DeLong (AUC) or exact McNemar (accuracy) on the pooled out-of-fold predictions, Holm-adjusted.</p>",
            _table(
                ["rank", "backbone", "framework", "value", "p vs best", "p pooled", "paired group", "run"],
                rows,
                raw_cols=tuple(range(8)),
            ),
        ]
        body += _significance_matrix(sub, spec, site, gid, format_p)
        (site / "groups" / f"{gid}.html").write_text(_page(f"{group}", body, "../"), encoding="utf-8")
        pages += 1
    for _, r in ranked.iterrows():
        (site / "entries" / f"{r['entry_id']}.html").write_text(
            _page(f"{r['backbone']} on {r['data']}", _entry_body(r, spec, metrics, site, group_ids), "../"),
            encoding="utf-8",
        )
        pages += 1
    (site / "index.html").write_text(_page("benchbox board", index, None), encoding="utf-8")
    return pages + 1


#: a significance matrix shows at most this many entries of a paired group (its best ones)
MATRIX_MAX = 30


def _significance_matrix(sub: pd.DataFrame, spec, site: Path, gid: str, format_p) -> list[str]:
    """Every pair of each paired group: the corrected resampled t-test p (Holm across the group's pairs)
    as a heat map (an HTML table shaded by p: dark where the two differ)."""
    from benchbox.results.pairstats import holm
    from benchbox.results.views.leaderboard import fold_ttest

    e = html.escape
    out = []
    for key, members in sub[sub["paired_group"] != ""].groupby("paired_group", sort=False):
        if len(members) < 2:
            continue
        left_out = max(0, len(members) - MATRIX_MAX)
        rows = [r.to_dict() for _, r in members.head(MATRIX_MAX).iterrows()]
        names = [f"{r['backbone']} ({str(r['run'])[:24]})" for r in rows]
        n = len(rows)
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
        raw = [fold_ttest(rows[i], rows[j], spec)[0] for i, j in pairs]
        adjusted = holm(raw)
        matrix = np.full((n, n), np.nan)
        for (i, j), p in zip(pairs, adjusted):
            matrix[i, j] = matrix[j, i] = p
        out.append(f"<h2>Significance matrix: paired group {e(key)}</h2>")
        out.append(
            f"<p class='note'>{e(spec.label)}: corrected resampled t-test p of every pair, Holm-adjusted across "
            f"the {len(pairs)} pairs; dark cells: the two differ (p &lt; 0.05), light: no test told them apart."
            + (f" The {left_out} entries ranked below the first {MATRIX_MAX} are left out." if left_out else "")
            + "</p>"
        )
        head = "".join(f"<th>{k + 1}</th>" for k in range(n))
        body = []
        for i in range(n):
            cells = []
            for j in range(n):
                if i == j:
                    cells.append("<td class='num'>—</td>")
                    continue
                p = matrix[i, j]
                shade = "#eee" if np.isnan(p) else _shade(p)
                ink = "#fff" if not np.isnan(p) and p < 0.01 else "#000"
                cells.append(f"<td class='num' style='background:{shade};color:{ink}'>{e(format_p(p))}</td>")
            body.append(f"<tr><th>{i + 1}. {e(names[i])}</th>{''.join(cells)}</tr>")
        out.append(f"<table class='heat'><thead><tr><th></th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
    return out


def _shade(p: float) -> str:
    """A red that darkens as p falls below 0.1 (white from 0.1 up)."""
    t = float(np.clip(1 - p / 0.1, 0, 1))
    r, g, b = 255 - 75 * t, 255 - 235 * t, 255 - 225 * t
    return f"rgb({r:.0f},{g:.0f},{b:.0f})"


def _critical_difference(ranked: pd.DataFrame, spec, site: Path) -> list[str]:
    """Friedman test and Nemenyi critical-difference diagram over the data sets (groups) on which the same
    backbones (by backbone plugin and options name) were ranked: only backbones present in every such group."""
    from benchbox.results.pairstats import cd_cliques, friedman, nemenyi_cd

    table = ranked.assign(_who=ranked["backbone"].astype(str) + " (" + ranked["plugin"].astype(str) + ")")
    best = table.sort_values("rank").drop_duplicates(["group", "_who"])  # one entry per backbone and group
    wide = best.pivot(index="group", columns="_who", values=spec.name).apply(pd.to_numeric, errors="coerce")
    wide = wide.dropna(axis=1, how="any")
    if len(wide) < 2 or wide.shape[1] < 3:  # Friedman's test needs 3 entries on 2 data sets
        return []
    if wide.shape[1] > 10:  # Demšar's table of q values stops at 10
        wide = wide[wide.mean().sort_values(ascending=not spec.higher_is_better).index[:10]]
    names = list(wide.columns)
    scores = wide.to_numpy(dtype=float)
    test = friedman(scores, spec.higher_is_better)
    ranks = np.asarray(test["ranks"], dtype=float)
    cd = nemenyi_cd(len(names), len(wide))
    cliques = cd_cliques(names, ranks, cd)
    image = site / "img" / "critical-difference.png"
    drawn = _cd_diagram(names, ranks, cd, cliques, image)
    e = html.escape
    out = [
        "<h2>Across data sets: Friedman test and critical difference</h2>",
        f"<p>{len(names)} backbones ranked on all of {len(wide)} groups by {e(spec.label)}. Friedman "
        f"&chi;&sup2; = {test['chi2']:.2f}, p = {test['p_value']:.3g}; Nemenyi critical difference "
        f"{cd:.2f} (&alpha; = 0.05). Backbones joined by a bar are not significantly different.</p>",
    ]
    if drawn:
        out.append("<img src='img/critical-difference.png' alt='critical-difference diagram'>")
    out.append(
        _table(
            ["backbone", "average rank"], [[n, f"{r:.2f}"] for n, r in sorted(zip(names, ranks), key=lambda x: x[1])]
        )
    )
    return out


def _cd_diagram(names, ranks, cd: float, cliques, path: Path) -> bool:
    """A critical-difference diagram in Demšar's (2006) style: the axis of average ranks, each backbone
    at its rank, the CD as a bar at the top, and a thick bar joining each clique."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    k = len(names)
    order = np.argsort(ranks)
    fig, ax = plt.subplots(figsize=(8, 1.6 + 0.3 * k))
    ax.set_xlim(0.5, k + 0.5)
    ax.set_ylim(-(k // 2 + 2) - len(cliques) * 0.3, 2)
    ax.axhline(0, color="black", lw=1)
    for t in range(1, k + 1):
        ax.plot([t, t], [0, 0.15], color="black", lw=1)
        ax.text(t, 0.3, str(t), ha="center", fontsize=8)
    ax.plot([1, 1 + cd], [1.2, 1.2], color="black", lw=2)
    ax.text(1 + cd / 2, 1.4, f"CD = {cd:.2f}", ha="center", fontsize=8)
    for n_, idx in enumerate(order):
        left = n_ < (k + 1) // 2
        y = -(n_ if left else k - 1 - n_) - 1
        x_text = 0.6 if left else k + 0.4
        ax.plot([ranks[idx], ranks[idx], x_text], [0, y, y], color="black", lw=0.8)
        ax.text(x_text, y, f"{names[idx][:35]} ({ranks[idx]:.2f})", ha="left" if left else "right", va="bottom",
                fontsize=8)  # fmt: skip
    for c, clique in enumerate(cliques):
        rs = [ranks[names.index(m)] for m in clique]
        ax.plot([min(rs) - 0.03, max(rs) + 0.03], [-0.3 - 0.25 * c] * 2, color="tab:red", lw=4)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _entry_body(r, spec, metrics: dict, site: Path, group_ids: dict) -> list[str]:
    from benchbox.results.views.format import value

    e = html.escape
    row = r.to_dict()
    body = [
        f"<p>Group: <a href='../groups/{group_ids[r['group']]}.html'>{e(str(r['group']))}</a>; rank "
        f"{e(str(r.get('paired_rank') or r['rank']))}.</p>",
        "<h2>Metrics (re-scored from the stored predictions)</h2>",
        _table(
            ["metric", "value [95% interval] ±fold spread"],
            [[m.label, value(row, m)] for m in metrics.values() if m.name in row and not _missing(row.get(m.name))],
        ),
        "<h2>Provenance</h2>",
        _table(
            ["", ""],
            [
                ["bundle", Path(str(r["run_dir"])).name],
                ["suite", r.get("suite")],
                ["run", r.get("run")],
                ["protocol", r.get("protocol")],
                ["backbone plugin", r.get("plugin")],
                ["framework", r.get("framework")],
                ["weights", r.get("weights")],
                ["input size", r.get("input_size")],
                ["hardware", r.get("hardware")],
                ["started", r.get("date")],
                ["benchbox", r.get("benchbox")],
                ["folds", r.get("folds")],
                ["notes", r.get("notes")],
            ],
        ),
        "<h2>Fingerprints</h2>",
        _table(
            ["", ""],
            [
                ["data", r.get("data_fingerprint") or "none"],
                ["split", r.get("split_fingerprint") or "none"],
                ["paired group", r.get("paired_group") or "not paired (a fingerprint is missing)"],
            ],
        ),
    ]
    confusion, classes = row.get("confusion"), row.get("classes")
    if isinstance(confusion, list) and isinstance(classes, list):
        cm = np.asarray(confusion)
        body += [
            "<h2>Confusion matrix (pooled over folds; rows: true class, columns: predicted)</h2>",
            _table(
                [""] + [str(c) for c in classes],
                [[str(c)] + [str(int(v)) for v in cm[i]] for i, c in enumerate(classes)],
            ),
        ]
    bins = row.get("reliability")
    if isinstance(bins, list) and bins:
        body.append("<h2>Calibration</h2>")
        facts = [f"{k}: {row[k]:.3f}" for k in ("brier", "ece") if not _missing(row.get(k))]
        body.append(f"<p>{e('; '.join(facts))} (Brier: multi-class; ECE: top-label, {len(bins)} bins)</p>")
        body.append(_reliability(bins))
        body.append(
            _table(
                ["confidence", "images", "mean confidence", "accuracy"],
                [
                    [
                        f"({b['lower']:.2f}, {b['upper']:.2f}]",
                        b["count"],
                        f"{b['confidence']:.3f}",
                        f"{b['accuracy']:.3f}",
                    ]
                    for b in bins
                    if b.get("count")
                ],
            )
        )
    return body


def _reliability(bins) -> str:
    """A reliability diagram as inline SVG: accuracy per confidence bin against the diagonal."""
    size, pad = 240, 30
    inner = size - 2 * pad

    def xy(x, y):
        return pad + x * inner, size - pad - y * inner

    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{size}' height='{size}' role='img' "
        "aria-label='reliability diagram'><title>reliability diagram</title>",
        f"<rect x='{pad}' y='{pad}' width='{inner}' height='{inner}' fill='none' stroke='#999'/>",
    ]
    for b in bins:
        if not b.get("count") or _missing(b.get("accuracy")):
            continue
        x0, y0 = xy(b["lower"], b["accuracy"])
        x1, _ = xy(b["upper"], 0)
        parts.append(
            f"<rect x='{x0:.1f}' y='{y0:.1f}' width='{x1 - x0:.1f}' height='{size - pad - y0:.1f}' "
            "fill='#4a78b5' fill-opacity='0.75' stroke='#234'/>"
        )
    (ax, ay), (bx, by) = xy(0, 0), xy(1, 1)
    parts.append(f"<line x1='{ax}' y1='{ay}' x2='{bx}' y2='{by}' stroke='#888' stroke-dasharray='4 3'/>")
    parts.append(f"<text x='{size / 2}' y='{size - 6}' font-size='11' text-anchor='middle'>confidence</text>")
    parts.append(
        f"<text x='10' y='{size / 2}' font-size='11' text-anchor='middle' transform='rotate(-90 10 {size / 2})'>"
        "accuracy</text>"
    )
    parts.append(f"<text x='{pad}' y='{size - pad + 12}' font-size='9'>0</text>")
    parts.append(f"<text x='{size - pad - 4}' y='{size - pad + 12}' font-size='9'>1</text></svg>")
    return "".join(parts)


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


__all__ = ["AddResult", "BundleError", "add", "build", "claim_digest", "entries", "predictions_digest"]
