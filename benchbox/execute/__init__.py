"""Stage 3, executing: the runner, sessions and the run store, executors, the harness that times every fold, trackers."""
