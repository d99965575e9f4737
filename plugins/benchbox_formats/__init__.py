"""The first-party output formats: markdown, LaTeX, CSV, JSON and HTML (docs/plugins.md, "Output formats").

Each is one object naming its ``--format`` word, its file suffix and the file it adds to every run
directory; the rendering itself lives in benchbox/views (the tables a report or a leaderboard is made
of), so a third party's format can reuse the same pieces.
"""

from __future__ import annotations

import json

from benchbox import hookimpl
from benchbox.contracts import OutputFormat


class Markdown(OutputFormat):
    name, aliases, suffix, run_file = "markdown", ("md",), ".md", "report.md"
    description = "GitHub-flavoured Markdown tables (report.md; a leaderboard to paste into a README)"

    def render_run(self, result) -> str:
        from benchbox.results.views.report import render_markdown

        return render_markdown(result)

    def render_leaderboard(self, ranked, spec, output=None) -> str:
        from benchbox.results.views.leaderboard import render_markdown

        return render_markdown(ranked, spec)


class Latex(OutputFormat):
    name, aliases, suffix, run_file = "latex", ("tex",), ".tex", "report.tex"
    description = "LaTeX booktabs tables for a paper (report.tex)"

    def render_run(self, result) -> str:
        from benchbox.results.views.report import render_latex

        return render_latex(result)


class Csv(OutputFormat):
    name, suffix, run_file = "csv", ".csv", "summary.csv"
    description = "every scalar of the summary, one row per cell (summary.csv) or per leaderboard entry"

    def render_run(self, result) -> str:
        from benchbox.results.views.report import numeric_frame

        return numeric_frame(result).to_csv(index=False)

    def render_leaderboard(self, ranked, spec, output=None) -> str:
        from benchbox.results.views.leaderboard import flat_frame

        return flat_frame(ranked).to_csv(index=False)


class Json(OutputFormat):
    name, suffix = "json", ".json"
    description = "the same rows as CSV, as a JSON list of objects"

    def render_run(self, result) -> str:
        from benchbox.results.views.report import numeric_frame

        return json.dumps(json.loads(numeric_frame(result).to_json(orient="records")), indent=1) + "\n"

    def render_leaderboard(self, ranked, spec, output=None) -> str:
        from benchbox.results.views.leaderboard import flat_frame

        return flat_frame(ranked).to_json(orient="records", indent=1)


class Html(OutputFormat):
    name, suffix, run_file = "html", ".html", "report.html"
    description = "one self-contained page: sortable tables, plots embedded, provenance (report.html)"

    def render_run(self, result) -> str:
        from benchbox.results.views.html import render_html

        return render_html(result)

    def render_leaderboard(self, ranked, spec, output=None) -> str:
        from benchbox.results.views.leaderboard import render_html

        return render_html(ranked, spec, output)


@hookimpl
def benchbox_output_formats():
    return [Markdown(), Csv(), Latex(), Html(), Json()]  # the order --help and errors list them in
