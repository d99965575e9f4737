"""Views of runs: tables (terminal, markdown, CSV, LaTeX), plots, leaderboards and paired
comparisons. Each renders a :class:`benchbox.results.summary.RunResult` (or several) from what the
evaluators declared; none knows a metric by name."""
