"""Stage 2, data: images decoded and padded, folds checked, probes, the data root, exports."""
