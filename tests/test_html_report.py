"""report.html: one self-contained page per run (tables with intervals, every section, plots
embedded, per-fold spread, problems, provenance), every name escaped; opened in a real headless
Chromium together with a leaderboard page: no console error, no blank render. And the terminal
table at 100 columns keeps every name whole and never folds a value mid-number."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchbox import hookimpl
from benchbox.contracts import Backbone, Section
from benchbox.plugins import load_registry
from conftest import fold_record, run_cli, write_suite

LONG = "a_backbone_with_a_rather_long_name-v2"


class Centroid(Backbone):
    """Nearest class centroid on 8x-downscaled pixels: a real backbone that trains in milliseconds."""

    name = "htmltest/centroid"
    framework = "numpy"
    defaults = {"input_size": [32, 32], "weights": "none", "temperature": 10.0}

    @staticmethod
    def _features(images):
        n, h, w = images.shape
        return images[:, : h - h % 8, : w - w % 8].reshape(n, h // 8, 8, w // 8, 8).mean(axis=(2, 4)).reshape(n, -1)

    def fit(self, job):
        x = self._features(job.x_train) / 255.0
        return np.stack([x[job.y_train == c].mean(0) for c in range(job.num_classes)]), job.options["temperature"]

    def predict(self, model, images, ids=None):
        centroids, temperature = model
        d = ((self._features(images)[:, None, :] / 255.0 - centroids[None]) ** 2).mean(axis=2)
        e = np.exp(-temperature * d - (-temperature * d).max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)


class _Plugin:
    @hookimpl
    def benchbox_backbones(self):
        return [Centroid()]


plugin = _Plugin()

SUITE = """
name = "html"
description = "centroids <b>on</b> synthetic X-rays & a planted shortcut"
seed = 4
output_dir = "{out}"
evaluators = ["paper", "clinical"]
[protocol]
k = 3
grouped = true
[datasets.syn]
plugin = "synthetic"
images = 60
patients = 24
shortcut = true
[backbones.centroid]
plugin = "htmltest/centroid"
[backbones.{long}]
plugin = "htmltest/centroid"
temperature = 1.0
[probes]
lungs-blackout = {{ fraction = 0.6 }}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real run (in-process, numpy backbones, a shortcut probe): its views are written at the end."""
    from benchbox.define.suite import load_suite
    from benchbox.execute.runner import run_suite

    tmp = tmp_path_factory.mktemp("html-run")
    registry = load_registry(extra_plugins=[plugin])
    suite = write_suite(tmp / "html.toml", SUITE.format(out=tmp / "runs", long=LONG))
    return run_suite(load_suite(suite, registry), registry, run_dir=tmp / "run"), registry


CLASSES = ["covid", "pneumonia", "normal"]
EVIL = "<img src=x onerror=alert(1)>"


@pytest.fixture
def stored(tmp_path, registry):
    """A run directory written by hand (no training, no plots): two backbones, a probe, two image
    sources, a suite file with markup in it. Fast: the paper evaluator only."""
    from benchbox.execute.records import CellKey
    from benchbox.execute.store import RunStore, write_json
    from benchbox.results.summary import summarise

    store = RunStore(tmp_path / "run")
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 8)
    ids = [f"img{i}" for i in range(len(y))]
    keys = [CellKey("syn", b, probe) for probe in ("", "lungs-blackout") for b in ("centroid", LONG)]
    data = {
        slug: {
            "dataset": "syn",
            "plugin": "synthetic",
            "probe": probe or None,
            "classes": CLASSES,
            "positive_class": "covid",
            "images": len(y),
            "patients": 12,
            "class_counts": dict.fromkeys(CLASSES, 8),
            "fingerprint": f"sha256:{slug}-fingerprint",
            "notes": [f"note {EVIL}"],
            "class_sources": {c: {"a": 4, "b": 4} for c in CLASSES},
        }
        for slug, probe in (("syn", ""), ("syn+lungs-blackout", "lungs-blackout"))
    }
    suite_text = f'name = "stored"\ndescription = "{EVIL} & more"\nseed = 5\n'
    (store.path).mkdir(parents=True)
    (store.path / "suite.toml").write_text(suite_text)
    write_json(
        store.manifest_path,
        {
            "format": "benchbox-run/2",
            "suite": "stored",
            "suite_digest": "d1",
            "suite_as_run": {"name": "stored", "description": f"{EVIL} & more"},
            "status": "complete",
            "seed": 5,
            "evaluators": ["paper"],
            "protocol": {"grouped": True},
            "protocol_label": "2-fold (stratified+grouped)",
            "training": {"epochs": 3},
            "datasets": data,
            "probes": {"lungs-blackout": {"fraction": 0.6}},
            "cells": [
                {
                    "dataset": k.dataset,
                    "probe": k.probe,
                    "backbone": k.backbone,
                    "plugin": "x/y",
                    "framework": "numpy",
                    "options": {"input_size": [32, 32]},
                    "folds": 2,
                }
                for k in keys
            ],
            "environment": {
                "benchbox": "9.8.7",
                "python": "3.11.42",
                "cpu": "a test cpu",
                "packages": {"numpy": "1.0"},
            },
            "started_at": "2026-11-25T10:00:00",
        },
    )
    for n, key in enumerate(keys):
        for fold in range(2):
            idx = np.flatnonzero(np.arange(len(y)) % 2 == fold)
            logits = rng.normal(0, 1, (len(idx), 3))
            logits[np.arange(len(idx)), y[idx]] += 1.0 + n
            store.write_record(
                fold_record(
                    key,
                    fold,
                    CLASSES,
                    [ids[i] for i in idx],
                    y[idx],
                    np.exp(logits) / np.exp(logits).sum(1, keepdims=True),
                    test_groups=[f"p{i // 2}" for i in idx],
                    test_sources=["a" if i % 4 < 2 else "b" for i in idx],
                    n_train=len(y) - len(idx),
                    train_seconds=1.5,
                    infer_images_per_sec=1234.5,
                    suite_digest="d1",
                )
            )
    return summarise(store, registry)


def tiny_png(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 30, 30)).save(path)
    return path


def test_html_page_from_stored_records(stored, tmp_path):
    """Fast: the page of a hand-written run — tables, sections, folds, plots embedded, provenance."""
    from benchbox.results.views.html import render_html

    result = stored
    plot = tiny_png(tmp_path / "roc__syn.png")
    text = render_html(result, plots=[plot])
    page = Page(text)
    assert page.external == [] and "default-src 'none'" in text
    assert [r[:2] for r in page.tables[0][1:]] == [
        [data, backbone] for data in ("syn", "syn [lungs-blackout]") for backbone in ("centroid", LONG)
    ]
    assert re.search(r"\d+\.\d+ \[\d+\.\d+–\d+\.\d+\] ±\d+\.\d+", " ".join(page.tables[0][1]))
    titles = [s.title for s in result.sections if s.in_report]
    assert any(t.startswith("Shortcut report") for t in titles) and any(t.startswith("Per source") for t in titles)
    assert all(t in page.headings for t in titles)
    assert page.images == ["data:image/png;base64," + __import__("base64").b64encode(plot.read_bytes()).decode()]
    assert "ROC curves" in page.headings and "Every fold" in page.headings
    assert "sha256:syn+lungs-blackout-fingerprint" in text and "9.8.7" in text and "3.11.42" in text
    assert 'name = "stored"' in text  # the suite file, verbatim


def test_every_name_is_escaped(stored):
    from benchbox.results.views.html import render_html

    result = stored
    result.problems.append(f"problem {EVIL}")
    result.sections.append(Section(f"title {EVIL}", pd.DataFrame([{"Backbone": EVIL, "n": 1}]), notes=[EVIL]))
    result.failures.append({"cell": f"syn x {EVIL}", "fold": 0, "error": EVIL})
    text = render_html(result, plots=[])
    assert EVIL not in text
    # suite text, description, data note, problem, section title, cell, note, failure (x2)
    assert text.count(html.escape(EVIL)) >= 8
    assert Page(text).images == []


def test_terminal_table_at_100_columns_keeps_names_and_values_whole(stored):
    from rich.console import Console

    from benchbox.results.views.report import print_terminal

    console = Console(width=100, record=True)
    print_terminal(stored, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 100
    rows = [line.split() for line in text.splitlines() if LONG in line and line.lstrip().startswith("syn")]
    assert len(rows) >= 4  # every row names its data set and backbone whole, on one line
    assert any(r[:4] == ["syn", "[lungs-blackout]", LONG, "2/2"] for r in rows)
    expected = {f"{100 * v:.2f}" for v in stored.summary["accuracy_3class"]}
    comparison = [r for r in rows if "2/2" in r]
    assert len(comparison) == 2 and all(r[r.index("2/2") + 1] in expected for r in comparison)  # whole values


class Page(HTMLParser):
    """Tables (header + rows of cell text), images, outside references, scripts of a page."""

    def __init__(self, text: str):
        super().__init__()
        self.tables, self.images, self.external, self.scripts, self.headings = [], [], [], 0, []
        self._row = self._cell = self._heading = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag in ("h1", "h2", "h3"):
            self._heading = []
        elif tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag == "script":
            self.scripts += 1
            if attrs.get("src"):
                self.external.append(attrs["src"])
        for key in ("src", "href"):
            ref = attrs.get(key) or ""
            if tag != "img" and not ref.startswith(("#", "data:")) and ref:
                self.external.append(ref)

    def handle_data(self, data):
        for buf in (self._cell, self._heading):
            if buf is not None:
                buf.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1].append(self._row)
            self._row = None
        elif tag in ("h1", "h2", "h3") and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None


@pytest.mark.slow
def test_report_html_of_a_real_run_is_self_contained_and_complete(run):
    result, _ = run
    path = Path(result.run_dir) / "report.html"
    text = path.read_text(encoding="utf-8")
    page = Page(text)
    assert page.external == [] and "http://" not in text and "https://" not in text  # nothing fetched
    assert "Content-Security-Policy" in text and "default-src 'none'" in text  # and nothing can be
    # the comparison table: both backbones whole, every declared table metric with its interval
    comparison = page.tables[0]
    assert [r[:2] for r in comparison[1:]] == [
        [data, backbone] for data in ("syn", "syn [lungs-blackout]") for backbone in ("centroid", LONG)
    ]
    for spec in (m for m in result.metrics if m.table):
        assert any(h.startswith(f"{spec.label} {spec.unit}".strip()) for h in comparison[0])
    assert re.search(r"\d+\.\d+ \[\d+\.\d+–\d+\.\d+\] ±\d+\.\d+", " ".join(comparison[1]))
    # every section of the run, under its own heading, with its table
    shown = [s for s in result.sections if s.in_report]
    assert any(s.title.startswith("Shortcut report") for s in shown)
    assert any("verdicts" in s.title for s in shown) and any(s.title.startswith("Confusion matrix") for s in shown)
    for section in shown:
        assert section.title in page.headings
    verdicts = next(t for t in page.tables if t and t[0][:2] == ["Probe", "Shortcut?"])
    assert {r[0] for r in verdicts[1:]} == {"lungs-blackout"}
    # plots embedded: ROC, per-fold panels, confusion heat-maps (one per cell)
    pngs = sorted(p.name for p in (Path(result.run_dir) / "plots").glob("*.png"))
    assert len(page.images) == len(pngs) >= 3 + len(result.cells)
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    assert any(name.startswith("roc__") for name in pngs) and any(name.startswith("confusion__") for name in pngs)
    assert {"Per-fold spread", "Every fold", "Provenance", "Plots", "ROC curves"} <= set(page.headings)
    fold_rows = next(t for t in page.tables if t and "Fold" in t[0] and "Train images" in t[0])
    assert len(fold_rows) - 1 == 3 * len(result.cells)
    # provenance: the suite file verbatim (escaped), seed, versions, data fingerprints
    env = result.manifest["environment"]
    assert "[backbones.centroid]" in text and "centroids &lt;b&gt;on&lt;/b&gt; synthetic X-rays &amp;" in text
    assert "<b>on</b>" not in text
    assert env["benchbox"] in text and env["python"] in text and str(result.manifest["seed"]) in text
    for meta in result.manifest["datasets"].values():
        assert meta["fingerprint"] and meta["fingerprint"] in text
    assert page.scripts == 1 and "addEventListener('click'" in text  # sortable headers, vanilla JS


@pytest.mark.slow
def test_report_command_writes_html(run, tmp_path):
    result, _ = run
    out = tmp_path / "r.html"
    res = run_cli("report", result.run_dir, "--format", "html", "-o", out)
    assert res.returncode == 0, res.stderr
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "Comparison" in text and LONG in text
    bad = run_cli("report", result.run_dir, "--format", "htm")
    assert bad.returncode == 1 and "html" in bad.stderr


# ---- the browser check ----------------------------------------------------------------------------

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
]


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def browse(page: Path, tmp: Path, *mode: str) -> subprocess.CompletedProcess:
    exe = chromium()
    if exe is None:
        pytest.skip("no Chromium here (.ci/run installs Debian's chromium package; apt-get was not available)")
    profile = tmp / f"profile-{page.stem}-{mode[0].lstrip('-').split('=')[0]}"
    return subprocess.run(
        [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *mode, page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=600,
    )


def console_messages(stderr: str) -> list[str]:
    """Chromium logs every console message of the page (log, warning, error, uncaught exception,
    blocked request) to stderr as ``...:CONSOLE(line)] "text", source: ...``."""
    return [line for line in stderr.splitlines() if re.search(r":CONSOLE[:(]\d*", line)]


def check_in_browser(page: Path, tmp: Path, tables: int) -> Path:
    dom = browse(page, tmp, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_messages(dom.stderr) == [], page
    rendered = Page(dom.stdout)
    assert len(rendered.tables) >= tables and all(len(t) >= 2 for t in rendered.tables[:tables]), page
    shot = tmp / f"{page.stem}.png"
    res = browse(page, tmp, f"--screenshot={shot}", "--window-size=1200,2000")
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    assert console_messages(res.stderr) == [], page
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.01, f"{shot} looks blank"  # text, tables, plots drawn
    return shot


@pytest.mark.slow
def test_console_check_catches_a_script_error(tmp_path):
    """The check below is only worth something if a broken page fails it."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><p>x</p><script>undefinedFunction();</script></body></html>")
    res = browse(bad, tmp_path, "--dump-dom")
    assert any("undefinedFunction is not defined" in m for m in console_messages(res.stderr)), res.stderr[-2000:]
    blocked = tmp_path / "blocked.html"
    from benchbox.results.views.html import CSP

    blocked.write_text(
        f"<!DOCTYPE html><html><head><meta http-equiv='Content-Security-Policy' content=\"{CSP}\"></head>"
        "<body><img src='https://example.invalid/x.png'></body></html>"
    )
    res = browse(blocked, tmp_path, "--dump-dom")
    assert any("Content Security Policy" in m for m in console_messages(res.stderr)), res.stderr[-2000:]


@pytest.mark.slow
def test_report_and_leaderboard_open_in_chromium(run, tmp_path):
    from benchbox.results.views.leaderboard import choose_metric, collect, rank, render_html

    result, registry = run
    shot = check_in_browser(Path(result.run_dir) / "report.html", tmp_path, tables=5)
    assert shot.stat().st_size > 10_000
    entries, problems, metrics = collect([result.run_dir], registry)
    spec = choose_metric(metrics, None)
    board = tmp_path / "leaderboard.html"
    board.write_text(render_html(rank(entries, spec), spec, board), encoding="utf-8")
    assert "report.html" in board.read_text()  # the entry links its run's report
    check_in_browser(board, tmp_path, tables=1)


def test_a_plugins_plots_are_grouped_under_the_title_its_section_declares(tmp_path):
    """The core knows no plugin's plot kinds: a Section's ``plots`` titles them (the Grad-CAM panels'
    "gradcam" prefix is plugins/benchbox_explain's), after the core's own; others by their prefix."""
    from PIL import Image

    from benchbox.results.views.html import figures

    paths = []
    for name in ("zzz_mine__a.png", "gradcam__a.png", "roc__a.png", "gradcam__b.png"):
        Image.new("L", (4, 4)).save(tmp_path / name)
        paths.append(tmp_path / name)
    groups = figures(paths, {"gradcam": "Grad-CAM: where each network looks"})
    assert [(title, [caption for caption, _ in images]) for title, images in groups] == [
        ("ROC curves", ["roc__a.png"]),
        ("Grad-CAM: where each network looks", ["gradcam__a.png", "gradcam__b.png"]),
        ("Zzz mine", ["zzz_mine__a.png"]),
    ]
    assert [title for title, _ in figures(paths)][1] == "Gradcam"  # no section declares it: its prefix
