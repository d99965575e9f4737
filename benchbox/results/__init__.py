"""Stage 4, results: metrics from stored predictions, statistics, explanations and the views (tables, reports, leaderboards)."""
