"""Stage 1, defining a run: the suite file as a validated value, and the plan (cells, folds, units) made from it."""
