"""Stage 4, results: metrics from stored predictions, statistics and the views (tables, reports, leaderboards)."""
