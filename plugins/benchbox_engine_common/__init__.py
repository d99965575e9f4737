"""What the first-party Keras and PyTorch backbone plugins share, framework-free: the study's
settings per network and option checks (networks.py), and the frozen-prefix activation cache
(prefix_cache.py). Not a plugin itself (no entry point): a library the two engine plugins import."""
