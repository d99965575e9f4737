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

Every contribution is looked up by name in one registry (``benchbox.plugins.Registry.get``), with the
closest names suggested for a typo: the core never compares a data set, backbone, protocol, executor,
output format, tracker or fold inspector name itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from benchbox.contracts import (
        Backbone,
        BackboneFamily,
        CliOption,
        Dataset,
        DataSource,
        Evaluator,
        Executor,
        FoldInspector,
        OutputFormat,
        Section,
        SplitStrategy,
        Tracker,
    )
    from benchbox.execute.records import FoldRecord
    from benchbox.results.summary import RunResult

hookspec = pluggy.HookspecMarker("benchbox")
hookimpl = pluggy.HookimplMarker("benchbox")


# --- contribution hooks: what a plugin provides -----------------------------------------------
@hookspec
def benchbox_datasets() -> list[Dataset]:
    """Return the data sets this plugin provides.

    :return: :class:`benchbox.contracts.Dataset` instances; a ``name`` must be unique across plugins.

    Called once when the registry loads."""


@hookspec
def benchbox_backbones() -> list[Backbone]:
    """Return the backbones this plugin provides.

    :return: :class:`benchbox.contracts.Backbone` instances, named ``framework/network``.

    Called once when the registry loads, also on Ray workers; importing a framework here is
    discouraged (report it through ``availability`` and import it in ``fit``)."""


@hookspec
def benchbox_backbone_families() -> list[BackboneFamily]:
    """Return open-ended sets of backbones named ``PREFIX/MODEL`` (e.g. ``timm/resnet18``), resolved
    by name only when asked for.

    :return: :class:`benchbox.contracts.BackboneFamily` instances; a prefix must be unique.

    Called once when the registry loads, also on Ray workers."""


@hookspec
def benchbox_evaluators() -> list[Evaluator]:
    """Return the evaluators this plugin provides.

    :return: :class:`benchbox.contracts.Evaluator` instances; their declared ``metrics`` become table
        columns, plot panels and leaderboard rankings."""


@hookspec
def benchbox_data_sources() -> list[DataSource]:
    """Return the raw data sources `benchbox data fetch` downloads and `benchbox data verify` checks.

    :return: :class:`benchbox.contracts.DataSource` instances."""


@hookspec
def benchbox_split_strategies() -> list[SplitStrategy]:
    """Return the split strategies this plugin provides, one per ``[protocol] kind``.

    :return: :class:`benchbox.contracts.SplitStrategy` instances (e.g. ``kfold``, ``holdout``); the
        suite's ``[protocol]`` table is validated by the strategy its ``kind`` names."""


@hookspec
def benchbox_executors() -> list[Executor]:
    """Return the executors this plugin provides (``[executor] kind`` / ``--executor``).

    :return: :class:`benchbox.contracts.Executor` instances (e.g. ``local``, ``ray``)."""


@hookspec
def benchbox_output_formats() -> list[OutputFormat]:
    """Return the output formats this plugin provides (``--format`` of `report` and `leaderboard`).

    :return: :class:`benchbox.contracts.OutputFormat` instances; one with ``run_file`` set is written
        into every run directory."""


@hookspec
def benchbox_trackers() -> list[Tracker]:
    """Return the experiment trackers this plugin provides, each turned on by ``[tracking.NAME]``.

    :return: :class:`benchbox.contracts.Tracker` instances (e.g. ``mlflow``)."""


@hookspec
def benchbox_fold_inspectors() -> list[FoldInspector]:
    """Return the fold inspectors this plugin provides, each turned on by a top-level suite table of its name.

    :return: :class:`benchbox.contracts.FoldInspector` instances (e.g. ``explain``: Grad-CAM maps). Each
        acts on every scored fold with the fold's trained model, after the test fold is predicted, and
        returns what to keep (:class:`benchbox.contracts.FoldArtefacts`): a summary stored in the fold
        record, and arrays the run store writes beside it. It runs where the fold trains (a Ray worker
        too), and its table is validated by its own ``check_options`` and ``check_backbones``."""


@hookspec
def benchbox_cli_options() -> list[CliOption]:
    """Return command-line options this plugin adds to `benchbox run` (and `bench`): the role of
    pytest's ``pytest_addoption``.

    :return: :class:`benchbox.contracts.CliOption` values; each ``apply(value)`` runs when the option is
        given, before any backbone is built (e.g. ``--keras-backend`` sets KERAS_BACKEND)."""


@hookspec
def benchbox_cli_commands(app: Any, groups: dict) -> None:
    """Add commands to the ``benchbox`` command line.

    :param app: the root :class:`typer.Typer` application; add a command with ``@app.command()`` or a
        group of commands with ``app.add_typer(...)``.
    :param groups: the core's command groups by name (``"export"``, ``"data"``, ``"backbones"``...), to
        add a subcommand to one, e.g. ``groups["export"].command("mlflow")``.

    Called once per process, before the arguments are parsed. Raising marks the plugin broken; the
    other commands keep working."""


@hookspec
def benchbox_report_sections(result: RunResult) -> list[Section]:
    """Return tables for a run's report.

    :param result: the run's :class:`benchbox.results.summary.RunResult` (manifest, fold records, metrics).
    :return: :class:`benchbox.contracts.Section` values.

    Called in the driver whenever a run's views are rendered (after a run, by `benchbox report`
    and `benchbox leaderboard`); it must not train anything. Raising drops this plugin's sections
    with a warning; the rest of the report renders."""


# --- lifecycle hooks: what a plugin may observe (driver only) ------------------------------------
@hookspec
def benchbox_run_start(run_dir: Path, manifest: dict) -> None:
    """Called once when a run starts or resumes, after its manifest is written.

    :param run_dir: the run directory.
    :param manifest: the dict stored in manifest.json, plus ``manifest["tracking"]``: the suite's
        ``[tracking]`` table with command-line overrides applied (``{}`` when none). Where results
        are mirrored is not what the run computes: it is neither stored in manifest.json nor part of
        the suite digest.

    Raise here to stop a run before anything is trained. A tracker is better written as a
    :class:`benchbox.contracts.Tracker` (``benchbox_trackers``), which is turned on by its own table."""


@hookspec
def benchbox_fold_end(run_dir: Path, record: FoldRecord) -> None:
    """Called after each fold record has been written atomically to the run directory.

    :param run_dir: the run directory.
    :param record: the :class:`benchbox.execute.records.FoldRecord` just stored (``to_json()`` gives the
        stored form). A resumed run calls it only for folds trained in this session."""


@hookspec
def benchbox_run_end(run_dir: Path, result: RunResult) -> None:
    """Called once at the end of a run session, after the views are written.

    :param run_dir: the run directory.
    :param result: the :class:`benchbox.results.summary.RunResult` (``result.summary`` is the metrics
        DataFrame, one row per cell). Called even when some folds failed (see ``result.failures``)."""
