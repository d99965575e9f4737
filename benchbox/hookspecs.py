"""Every hook a benchbox plugin may implement, in one place (like pytest's hookspec.py).

A plugin is an ordinary module registered under the ``benchbox`` entry-point group of an
installed distribution; it implements any of these hooks with ``@benchbox.hookimpl``. A function
named ``benchbox_*`` that matches no hook here makes the plugin *broken* (a misspelt hook would
otherwise be ignored silently): `benchbox plugins` names it and `benchbox run` warns.

Where hooks run: the *contribution* hooks run once per process when the registry is loaded (in
the driver, and again in each Ray worker); the *lifecycle* hooks run in the driver only, never on a
Ray worker. What happens when one raises: a contribution hook that raises marks only its plugin
broken, the others keep working; a lifecycle hook that raises stops the run with an error naming
the plugin and hook (every fold already stored stays stored; rerunning resumes).
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("benchbox")
hookimpl = pluggy.HookimplMarker("benchbox")


# --- contribution hooks: what a plugin provides -----------------------------------------------
@hookspec
def benchbox_datasets():
    """Return a list of :class:`benchbox.contracts.Dataset` instances this plugin provides.

    Called once when the registry loads. A data set's ``name`` must be unique across plugins."""


@hookspec
def benchbox_backbones():
    """Return a list of :class:`benchbox.contracts.Backbone` instances this plugin provides.

    Called once when the registry loads, also on Ray workers; importing a framework here is
    discouraged (report it through ``availability`` and import it in ``fit``)."""


@hookspec
def benchbox_backbone_families():
    """Return a list of :class:`benchbox.contracts.BackboneFamily` (open-ended sets of backbones
    named ``PREFIX/MODEL``, e.g. ``timm/resnet18``), resolved by name only when asked for.

    Called once when the registry loads, also on Ray workers. A prefix must be unique."""


@hookspec
def benchbox_evaluators():
    """Return a list of :class:`benchbox.contracts.Evaluator` instances this plugin provides.

    Their declared ``metrics`` become table columns, plot panels and leaderboard rankings."""


@hookspec
def benchbox_data_sources():
    """Return a list of :class:`benchbox.contracts.DataSource` (raw sources `benchbox data fetch`
    downloads and `benchbox data verify` checks)."""


@hookspec
def benchbox_report_sections(result):
    """Return a list of :class:`benchbox.contracts.Section` for a run's report.

    ``result`` is the run's :class:`benchbox.summary.RunResult` (manifest, fold records, metrics).
    Called in the driver whenever a run's views are rendered (after a run, by `benchbox report`
    and `benchbox leaderboard`); it must not train anything. Raising drops this plugin's sections
    with a warning; the rest of the report renders."""


# --- lifecycle hooks: what a plugin may observe (driver only) ------------------------------------
@hookspec
def benchbox_run_start(run_dir, manifest):
    """Called once when a run starts or resumes, after its manifest is written.

    ``run_dir``: :class:`pathlib.Path`; ``manifest``: the dict stored in manifest.json, plus
    ``manifest["tracking"]``: the suite's ``[tracking]`` table with command-line overrides applied
    (e.g. ``{"mlflow": {"uri": ...}}`` from ``--mlflow URI``; ``{}`` when none). Where results are
    mirrored is not what the run computes: it is neither stored in manifest.json nor part of the
    suite digest. Raise here to stop a run before anything is trained (e.g. a tracker that cannot be
    reached); a tracker that fails later should warn rather than raise (docs/tracking.md)."""


@hookspec
def benchbox_fold_end(run_dir, record):
    """Called after each fold record has been written atomically to the run directory.

    ``record``: the :class:`benchbox.records.FoldRecord` just stored (call ``to_json()`` for the
    stored form). A resumed run calls it only for folds trained in this session."""


@hookspec
def benchbox_run_end(run_dir, result):
    """Called once at the end of a run session, after the views are written.

    ``result``: the :class:`benchbox.summary.RunResult` (``result.summary`` is the metrics
    DataFrame, one row per cell). Called even when some folds failed (see ``result.failures``)."""
