"""What a new user's trial found in the views: markdown that reads right as text and rendered, tied
leaderboard entries, wide plots on the leaderboard page, and run links that only work locally."""

from __future__ import annotations

import re
import struct
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from benchbox.contracts import MetricSpec
from benchbox.results.views import leaderboard as lb
from benchbox.results.views.format import md_escape

ACC = MetricSpec("accuracy_3class", "Accuracy 3-class", scale=100, unit="%", digits=2)


# --- markdown ---------------------------------------------------------------------------------
def test_markdown_prose_keeps_a_literal_less_than():
    assert md_escape("McNemar's test (* p < 0.05).") == "McNemar's test (* p < 0.05)."
    assert md_escape("p<0.05 & more") == "p<0.05 & more"  # '<' before a digit and a lone '&' are text


def test_markdown_still_escapes_what_would_be_html():
    assert md_escape("<script>alert(1)</script>") == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert md_escape("a <!-- comment") == "a &lt;!-- comment"
    assert md_escape("R&amp;D") == "R&amp;amp;D"  # an entity is shown as typed, not decoded
    assert md_escape("a|b") == "a\\|b"


def test_report_note_reads_p_less_than_in_markdown():
    from types import SimpleNamespace as NS

    from benchbox.results.views.report import note

    summary = pd.DataFrame({"vs_best_metric": ["accuracy_3class"]})
    result = NS(metrics=[ACC], summary=summary, metric=lambda name: ACC)
    text = md_escape(note(result))
    assert "(* p < 0.05)" in text and "&lt;" not in text


# --- ties ---------------------------------------------------------------------------------------
def _entries(values: dict[str, float], group: str = "g", run_dir: str = "/nowhere/run") -> pd.DataFrame:
    rows = []
    for backbone, v in values.items():
        rows.append(
            {
                "backbone": backbone,
                "plugin": f"torch/{backbone}",
                "framework": "torch",
                "accuracy_3class": v,
                "weights": "none",
                "suite": "s",
                "run": Path(run_dir).name,
                "run_dir": run_dir,
                "grouped": True,
                "hardware": "cpu",
                "date": "2026-11-26T10:00",
                "benchbox": "0.2",
                "notes": "",
                "group": group,
            }
        )
    return pd.DataFrame(rows)


def test_tied_entries_share_a_rank_and_the_next_rank_counts_them():
    ranked = lb.rank(_entries({"zeta": 0.75, "best": 0.9, "alpha": 0.75, "mid": 0.75, "last": 0.5}), ACC)
    assert list(zip(ranked["backbone"], ranked["rank"])) == [
        ("best", 1),
        ("alpha", 2),  # a tie is listed by backbone name: an order that claims nothing
        ("mid", 2),
        ("zeta", 2),
        ("last", 5),
    ]


def test_ties_are_compared_at_the_displayed_precision_and_the_order_is_stable():
    # 75.001% and 74.999% both read 75.00: the same rank; 74.99% reads differently: ranked below
    values = {"b": 0.75001 - 1e-9, "a": 0.74999, "c": 0.7499}
    first = lb.rank(_entries(values), ACC)
    again = lb.rank(_entries(dict(reversed(list(values.items())))), ACC)
    assert list(first["backbone"]) == list(again["backbone"]) == ["a", "b", "c"]
    assert list(first["rank"]) == [1, 1, 3]


def test_lower_is_better_ties_and_missing_values():
    loss = MetricSpec("loss", "Loss", higher_is_better=False)
    entries = _entries({"a": 0.2, "b": 0.1, "c": 0.2, "d": float("nan")}).rename(columns={"accuracy_3class": "loss"})
    ranked = lb.rank(entries, loss)
    assert [(b, None if pd.isna(r) else int(r)) for b, r in zip(ranked["backbone"], ranked["rank"])] == [
        ("b", 1),
        ("a", 2),
        ("c", 2),
        ("d", None),
    ]


def test_markdown_leaderboard_shows_the_shared_rank():
    text = lb.render_markdown(lb.rank(_entries({"x": 0.8, "y": 0.8, "z": 0.7}), ACC), ACC)
    ranks = [line.split("|")[1].strip() for line in text.splitlines() if re.match(r"\|\s*\d", line)]
    assert ranks == ["1", "1", "3"]


# --- the HTML page: wide plots, local links ------------------------------------------------------
def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\xff" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.figures, self.links, self.style, self._in_style, self._figure = [], [], "", False, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "figure":
            self._figure = a.get("class", "")
        elif tag == "img" and self._figure is not None:
            self.figures.append((self._figure, a.get("alt"), a.get("width")))
        elif tag == "a":
            self.links.append(a.get("href"))
        elif tag == "style":
            self._in_style = True

    def handle_endtag(self, tag):
        if tag == "figure":
            self._figure = None
        elif tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.style += data


@pytest.fixture
def run_with_plots(tmp_path):
    run = tmp_path / "runs" / "quick-1"
    (run / "plots").mkdir(parents=True)
    (run / "plots" / "folds__synthetic.png").write_bytes(_png(1375, 374))
    (run / "plots" / "roc__synthetic.png").write_bytes(_png(400, 400))
    (run / "report.html").write_text("<html></html>")
    return run


def test_wide_plots_get_a_row_of_their_own_at_their_natural_width(run_with_plots, tmp_path):
    out = tmp_path / "site" / "leaderboard.html"
    page = Page()
    page.feed(lb.render_html(lb.rank(_entries({"x": 0.8}, run_dir=str(run_with_plots)), ACC), ACC, out))
    figures = {alt.split(": ")[1]: (cls, width) for cls, alt, width in page.figures}
    assert figures == {"folds__synthetic": ("wide", "1375"), "roc__synthetic": ("small", "400")}
    assert "420px" not in page.style  # the cap that squeezed a 1375 px plot to a third of its width
    wide_rules = re.findall(r"figure\.wide[^{]*\{([^}]*)\}", page.style)
    assert wide_rules and not any("max-width" in r and "px" in r for r in wide_rules)
    assert re.search(r"(^|})img\{max-width:100%", page.style)  # shrinks only to the window's width


def test_the_page_says_its_run_links_are_local(run_with_plots, tmp_path):
    out = tmp_path / "site" / "leaderboard.html"
    text = lb.render_html(lb.rank(_entries({"x": 0.8}, run_dir=str(run_with_plots)), ACC), ACC, out)
    page = Page()
    page.feed(text)
    assert page.links == ["../runs/quick-1/report.html"]
    assert "The run links are local" in text and "(e.g. ../runs/quick-1/report.html)" in text
    assert "Publish the run folders beside the page" in text

    to_stdout = lb.render_html(lb.rank(_entries({"x": 0.8}, run_dir=str(run_with_plots)), ACC), ACC, None)
    assert "file://" in to_stdout and "do not work anywhere else" in to_stdout


def test_runs_without_a_report_are_not_linked_and_the_page_says_how(tmp_path):
    text = lb.render_html(lb.rank(_entries({"x": 0.8}, run_dir=str(tmp_path / "bare")), ACC), ACC, tmp_path / "p")
    assert "<a " not in text and "benchbox report RUN_DIR" in text
