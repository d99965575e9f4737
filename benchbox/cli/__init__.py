"""The `benchbox` command line (typer).

The error boundary of benchbox: errors a user can act on are printed as one message without a
traceback; usage errors are click's one-line usage messages (exit 2); a plugin's failure names the
plugin, method and fold, its traceback goes to the run's log (shown with --verbose); Ctrl-C says
what was kept and how to resume (exit 130); anything else is reported as a bug with its traceback
in a log file. Exit codes: 0 ok, 1 error, 2 usage, 130 interrupted.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Optional

import typer

# the command modules register their commands on the applications when imported
from benchbox.cli import cache, data, inventory, results, share  # noqa: F401
from benchbox.cli.common import (
    STATE,
    Interrupted,
    app,
    backbones_app,
    data_app,
    err_console,
    esc,
    export_app,
    plugin_app,
    weights_app,
)
from benchbox.cli.run import bench, run
from benchbox.errors import BenchboxError

#: the order `benchbox --help` lists the commands in: the main job first, as a user meets them
ORDER = ("run", "validate", "report", "compare", "leaderboard", "verify", "bundle", "bench", "plugins")


def _sort_commands() -> None:
    """The core's commands in ORDER, then the others (a plugin's) in the order they were added."""
    app.registered_commands.sort(key=lambda c: ORDER.index(c.callback.__name__) if c.callback.__name__ in ORDER else 99)


_sort_commands()


def _crash_log(text: str) -> Path:
    path = Path(tempfile.gettempdir()) / f"benchbox-crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    path.write_text(text, encoding="utf-8")
    return path


def _show_error(exc: BenchboxError) -> None:
    err_console.print("[bold red]error:[/] ", end="")
    err_console.print(str(exc), markup=False, highlight=False)
    if exc.detail and STATE["verbose"]:
        err_console.print(exc.detail, markup=False, highlight=False)
    elif exc.detail:
        err_console.print("(run with --verbose to see the plugin's traceback)", style="dim")


#: the core's command groups, by name, for plugins that add a subcommand to one (benchbox_cli_commands)
GROUPS = {
    "backbones": backbones_app,
    "plugin": plugin_app,
    "data": data_app,
    "weights": weights_app,
    "export": export_app,
    "board": share.board_app,
}
_ADDED: dict = {}  # plugin name -> (its CliOptions); a plugin's commands are added once per process


def _command():
    """The click command of the whole CLI: the core's commands, then what plugins add through
    ``benchbox_cli_commands`` (commands) and ``benchbox_cli_options`` (options of run and bench,
    applied before the command body runs; their values never reach it)."""

    from benchbox.plugins import load_registry

    registry = STATE["registry"] = load_registry()
    for impl in registry.pm.hook.benchbox_cli_commands.get_hookimpls():
        if impl.plugin_name in _ADDED:
            continue
        _ADDED[impl.plugin_name] = True
        try:
            impl.function(app=app, groups=GROUPS)
        except Exception as exc:  # a plugin's command must not break the others
            registry.broken.append((impl.plugin_name, f"benchbox_cli_commands failed: {type(exc).__name__}: {exc}"))
    _sort_commands()
    contributed, problems = registry.call_each("benchbox_cli_options")
    registry.broken += [(p.split()[1], p) for p in problems]
    options = [o for _, opts in contributed for o in (opts or [])]
    for info in app.registered_commands:
        original = getattr(info.callback, "__benchbox_original__", info.callback)
        if original in (run, bench):
            info.callback = _with_plugin_options(original, [o for o in options if original is run or o.bench])
    return typer.main.get_command(app)


def _option_name(option) -> str:
    return "plugin_" + option.flag.lstrip("-").replace("-", "_")


def _with_plugin_options(command, options):
    """``command`` with the plugins' options added to its signature (typer builds them like its own);
    each given one is applied (into STATE["overrides"]) before the command body runs, which never sees them."""
    import functools
    import inspect
    from typing import get_type_hints

    signature = inspect.signature(command, eval_str=True)
    taken = {p.name for p in signature.parameters.values()}
    options = [o for o in options if _option_name(o) not in taken]

    @functools.wraps(command)
    def wrapper(**kwargs):
        for o in options:
            value = kwargs.pop(_option_name(o), None)
            if value is not None:
                o.apply(value, STATE["overrides"])
        return command(**kwargs)

    extra = [
        inspect.Parameter(
            _option_name(o), inspect.Parameter.KEYWORD_ONLY, default=typer.Option(None, o.flag, help=o.help),
            annotation=Optional[o.type],
        )
        for o in options
    ]  # fmt: skip
    wrapper.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *extra])
    wrapper.__annotations__ = {**get_type_hints(command), **{p.name: p.annotation for p in extra}}
    wrapper.__benchbox_original__ = command
    return wrapper


def main(argv: list[str] | None = None) -> None:
    from typer import exceptions as typer_exc
    from typer._click import exceptions as click_exc

    args = sys.argv[1:] if argv is None else argv
    STATE.update(verbose="--verbose" in args or "-v" in args, overrides={}, registry=None)
    try:
        rv = _command().main(args=args, standalone_mode=False, prog_name="benchbox")
    except Interrupted as exc:
        err_console.print(str(exc), markup=False, highlight=False)
        sys.exit(130)
    except BenchboxError as exc:
        _show_error(exc)
        sys.exit(1)
    except (typer_exc.Abort, KeyboardInterrupt):
        err_console.print("interrupted; rerun the same command to resume (finished folds are kept)")
        sys.exit(130)
    except click_exc.ClickException as exc:  # usage errors: click's one-line message and exit 2
        exc.show()
        sys.exit(exc.exit_code)
    except typer_exc.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception:
        log = _crash_log(traceback.format_exc())
        err_console.print(
            f"[bold red]internal error:[/] {esc(repr(sys.exc_info()[1]))} — a bug in benchbox or a plugin; "
            f"the traceback is in {esc(log)}. Please report it with that file.",
            highlight=False,
        )
        if STATE["verbose"]:
            err_console.print(log.read_text(), markup=False, highlight=False)
        sys.exit(1)
    if rv == 130:  # typer turned a Ctrl-C into exit code 130
        err_console.print("interrupted; rerun the same command to resume (finished folds are kept)")
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
