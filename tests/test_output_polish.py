"""Output polish from a new user's trial (issue 16): quiet TensorFlow, table headers that break only
between words, intervals without a stray space, piped output that respects COLUMNS, leaderboard
sections named by the suite's data set aliases, report.html's confusion tables and header arrows."""

from __future__ import annotations

import logging
import re

import pytest
from rich.console import Console

from conftest import run_cli
from test_html_report import LONG, stored  # noqa: F401  (the fixture: a hand-written run directory)


def terminal(result, width: int) -> str:
    from benchbox.results.views.report import print_terminal

    console = Console(width=width, record=True)
    print_terminal(result, console)
    return console.export_text()


def header_blocks(text: str) -> list[str]:
    """The header lines of every compact table: from the blank line below its title to its rule."""
    lines = text.splitlines()
    blocks = []
    for r, line in enumerate(lines):
        if line.strip().startswith("───"):
            top = r - 1
            while top > 0 and lines[top - 1].strip():
                top -= 1
            blocks.append("\n".join(lines[top:r]))
    return blocks


@pytest.mark.parametrize("width", [100, 80])
def test_compact_headers_break_between_words_and_names_stay_whole(stored, width):  # noqa: F811
    from benchbox.results.views.report import ABBREVIATIONS, comparison_frame

    text = terminal(stored, width)
    assert max(len(line) for line in text.splitlines()) <= width
    blocks = header_blocks(text)
    assert blocks, "the comparison table is drawn compact at this width"
    tokens = set(" ".join(blocks).split())
    for column in comparison_frame(stored).columns:
        for word in str(column).split():
            assert ABBREVIATIONS.get(word, word) in tokens, (column, word, blocks)
    assert "Sens = Sensitivity" in text and "Spec = Specificity" in text  # the legend of the abbreviations
    rows = [line.replace("│", " ").split() for line in text.splitlines() if line.lstrip("│ ").startswith("syn")]
    assert sum(LONG in r for r in rows) >= 4  # names whole, on one line
    assert all(
        r[1] in ("centroid", LONG) or r[1:3] in (["[lungs-blackout]", "centroid"], ["[lungs-blackout]", LONG])
        for r in rows
    ), rows


@pytest.mark.parametrize("width", [200, 100, 80])
def test_intervals_have_no_stray_space_and_break_only_after_the_dash(stored, width):  # noqa: F811
    text = terminal(stored, width)
    assert not re.search(r"– +\d", text)  # no '[56.8– 75.3]'
    pieces = re.findall(r"\[[^\]\s]*\]?", text)
    intervals = [p for p in pieces if "–" in p]
    assert intervals
    for p in intervals:
        assert re.fullmatch(r"\[\d+\.\d–(\d+\.\d\])?", p), p  # whole, or broken right after the dash
    if width == 200:
        assert all(p.endswith("]") for p in intervals)  # room enough: every interval on one line


@pytest.mark.slow  # two CLI processes: ~7 s on 2 cores
def test_piped_report_respects_columns(stored):  # noqa: F811
    run_dir = stored.run_dir
    narrow = run_cli("report", run_dir, env={"COLUMNS": "100"}, timeout=300)
    assert narrow.returncode == 0, narrow.stderr
    assert LONG in narrow.stdout and max(len(line) for line in narrow.stdout.splitlines()) <= 100
    wide = run_cli("report", run_dir, env={"COLUMNS": ""}, timeout=300)
    assert wide.returncode == 0, wide.stderr
    assert max(len(line) for line in wide.stdout.splitlines()) > 100  # a file gets 200 columns


@pytest.mark.slow
def test_tensorflow_python_warnings_are_quiet_unless_verbose(monkeypatch, caplog):
    from benchbox_keras.engine import import_keras

    tf_logger = logging.getLogger("tensorflow")
    monkeypatch.setattr(tf_logger, "level", logging.NOTSET)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")  # what --verbose sets
    import_keras()
    with caplog.at_level(logging.WARNING):
        tf_logger.warning("5 out of the last 8 calls triggered tf.function retracing")
    assert "retracing" in caplog.text
    caplog.clear()
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")  # what the CLI sets without --verbose
    import_keras()
    with caplog.at_level(logging.WARNING):
        tf_logger.warning("5 out of the last 8 calls triggered tf.function retracing")
        tf_logger.error("an error still shows")
    assert "retracing" not in caplog.text and "an error still shows" in caplog.text


def test_html_confusion_corner_is_not_sortable_and_arrows_stay_on_the_header_line(stored):  # noqa: F811
    from benchbox.results.views.html import render_html

    text = render_html(stored, plots=[])
    confusion = [s for s in stored.sections if s.title.startswith("Confusion matrix")]
    assert confusion and text.count("<th class='blank'></th>") >= len(confusion)
    assert "<th></th>" not in text  # every empty header cell is the unsortable corner
    assert "th:not(.blank)" in text and "th.blank:after{content:none}" in text
    arrows = re.findall(r'th[^{}]*:after\{content:"([^"]*)"', text)
    assert arrows and all(a.startswith("\\00a0") for a in arrows)  # a no-break space glues arrow to the word
