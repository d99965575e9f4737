"""Every hook a benchbox plugin may implement, in one place (like pytest's hookspec.py).

A plugin is an ordinary module registered under the ``benchbox`` entry-point group of an
installed distribution. It implements any of these hooks with ``@benchbox.hookimpl``.
"""

import pluggy

hookspec = pluggy.HookspecMarker("benchbox")
hookimpl = pluggy.HookimplMarker("benchbox")


@hookspec
def benchbox_datasets():
    """Return a list of :class:`benchbox.contracts.Dataset` instances this plugin provides."""


@hookspec
def benchbox_backbones():
    """Return a list of :class:`benchbox.contracts.Backbone` instances this plugin provides."""


@hookspec
def benchbox_evaluators():
    """Return a list of :class:`benchbox.contracts.Evaluator` instances this plugin provides."""


@hookspec
def benchbox_run_start(run_dir, manifest):
    """Called once when a run starts (or resumes), with the run directory and its manifest."""


@hookspec
def benchbox_fold_end(run_dir, record):
    """Called after each fold record has been written; ``record`` is the stored dict."""


@hookspec
def benchbox_run_end(run_dir, summary):
    """Called once when every cell is done; ``summary`` is the metrics DataFrame."""


@hookspec
def benchbox_data_sources():
    """Return a list of :class:`benchbox.contracts.DataSource` (raw sources `benchbox data fetch`
    downloads and `benchbox data verify` checks)."""
