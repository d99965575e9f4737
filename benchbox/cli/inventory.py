"""`benchbox plugins`, `backbones list|describe`, `weights fetch` and `plugin new`: what is installed."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from benchbox.cli.common import (
    _freeze_value,
    _registry,
    app,
    backbones_app,
    console,
    err_console,
    esc,
    parse_size,
    plugin_app,
    weights_app,
)
from benchbox.contracts import Backbone
from benchbox.errors import BenchboxError, PluginError


@app.command()
def plugins():
    """List every dataset, backbone, evaluator and data source with its origin and availability."""
    registry = _registry(warn=False)
    table = Table(title="benchbox plugins")
    for col in ("kind", "name", "origin", "available", "description"):
        table.add_column(col)
    for kind in registry.tables:
        for name, entry in sorted(registry.table(kind).items()):
            avail = entry.availability
            table.add_row(
                esc(kind),
                esc(name),
                esc(entry.origin),
                "yes" if avail.ok else f"[red]no[/]: {esc(avail.reason)}",
                esc(getattr(entry.obj, "description", "")),
            )
    for prefix, (family, origin, _) in sorted(registry.backbones.families.items()):
        avail = family.availability()
        table.add_row(
            "backbone family",
            esc(f"{prefix}/<model>"),
            esc(origin),
            "yes" if avail.ok else f"[red]no[/]: {esc(avail.reason)}",
            esc(family.description),
        )
    console.print(table)
    for plugin, error in registry.broken:
        console.print(f"[red]broken plugin {esc(plugin)}:[/] {esc(error)}", highlight=False)
    if registry.broken:
        raise PluginError(f"{len(registry.broken)} plugin problem(s) above; fix or uninstall the plugin(s)")


@backbones_app.command("list")
def backbones_list(
    framework: Optional[str] = typer.Option(
        None, "--framework", help="Only this framework or family prefix: keras, torch, timm, txv..."
    ),
    pattern: Optional[str] = typer.Option(
        None, "--filter", help="Shell-style pattern on the name or the model part, e.g. 'convnext*'."
    ),
):
    """Every backbone name a suite may use: the study's and every member of a family (timm/<model>...)."""
    registry = _registry()
    table = registry.backbones
    names = table.listing(framework, pattern)
    for name in names:
        console.print(esc(name), highlight=False)
    for prefix, (family, _, _) in sorted(table.families.items()):
        avail = family.availability()
        if not avail.ok and (framework in (None, prefix, family.framework)):
            err_console.print(f"[yellow]{esc(prefix)}/<model> unavailable:[/] {esc(avail.reason)}", highlight=False)
    if not names:
        raise BenchboxError(
            "no backbone matches"
            + (f" --framework {framework}" if framework else "")
            + (f" --filter {pattern!r}" if pattern else "")
            + f"; frameworks and families: {', '.join(sorted(_frameworks(table)))}"
        )
    err_console.print(f"{len(names)} backbone(s)", highlight=False)


def _frameworks(table) -> set[str]:
    names = {e.obj.framework for e in table.values() if getattr(e.obj, "framework", "")}
    return names | set(table.families) | {f.framework for f, _, _ in table.families.values()}


@backbones_app.command("describe")
def backbones_describe(
    name: str = typer.Argument(..., help="Backbone plugin, e.g. keras/inception_v3."),
    cutoff: Optional[int] = typer.Option(None, "--cutoff", help="Frozen layers (default: the study's)."),
    freeze: Optional[str] = typer.Option(
        None, "--freeze", help='What to freeze: "none", "all", a fraction like 0.5, or a layer/module name.'
    ),
    input_size: str = typer.Option("200x266", "--input", help="HEIGHTxWIDTH."),
    layers: bool = typer.Option(
        False, "--layers", help="Also list every feature-map layer with its size (the names a suite may give a layer)."
    ),
):
    """Parameters (total / frozen / trainable), depth, last frozen layer, preprocessing, MACs."""
    from benchbox.define.suite import plugin_option_problems

    registry = _registry()
    backbone = registry.get("backbone", name)
    options = dict(backbone.defaults)
    if cutoff is not None:
        options["cutoff"] = cutoff
    if freeze is not None:
        if "freeze" not in options:
            raise BenchboxError(f"{name} has no freeze option; its options: {', '.join(sorted(options))}")
        options["freeze"] = _freeze_value(freeze)
    size = parse_size(input_size)
    problems = plugin_option_problems(backbone, name, {**options, "weights": "none"})
    if problems:
        raise BenchboxError(f"{name}: " + "; ".join(problems))
    facts = backbone.describe(options, size)
    table = Table(title=esc(name), show_header=False)
    table.add_column("fact")
    table.add_column("value")
    for key, value in facts.items():
        table.add_row(esc(key), f"{value:,}" if isinstance(value, int) else esc(value))
    console.print(table)
    if getattr(type(backbone), "describe", None) is Backbone.describe:  # the contract's default, not overridden
        console.print(
            f"{name} has no describe(): its plugin shows no parameters, depth or frozen layers "
            "(a plugin adds them with describe(options, input_size), see docs/plugins.md)",
            markup=False,
            highlight=False,
        )
    if layers:
        _print_feature_maps(backbone, name, {**options, "input_size": list(size)})


def _print_feature_maps(backbone, name: str, options: dict) -> None:
    """One line per feature-map layer, ``name  HxW``, in network order (``Backbone.feature_maps``)."""
    try:
        maps = backbone.feature_maps({**options, "weights": "none"})
    except NotImplementedError:
        raise BenchboxError(
            f"{name}: its plugin does not list its layers (no feature_maps(), see docs/plugins.md)"
        ) from None
    h, w = options["input_size"]
    console.print(f"{len(maps)} feature-map layers of {esc(name)} at {h}x{w}:", highlight=False)
    for layer, (mh, mw) in maps:
        console.print(f"  {layer}  {mh}x{mw}", markup=False, highlight=False)


@weights_app.command("fetch")
def weights_fetch(
    names: Optional[list[str]] = typer.Argument(None, help="Backbones (default: every available one)."),
    alpha: float = typer.Option(
        1.0, "--alpha", help="Width multiplier of backbones that take an alpha option (Keras MobileNet v2)."
    ),
    input_size: str = typer.Option(
        "224x224", "--input", help="HEIGHTxWIDTH (Keras MobileNet v2 picks its file by it)."
    ),
):
    """Download ImageNet weights into the framework caches, for later offline runs."""
    from benchbox.errors import PluginError

    registry = _registry()
    names = names or sorted(n for n, e in registry.backbones.items() if e.availability.ok)
    failed = []
    for name in names:
        backbone = registry.get("backbone", name)
        options = {**backbone.defaults, "weights": "imagenet", "input_size": list(parse_size(input_size))}
        if "alpha" in options:
            options["alpha"] = alpha
        try:
            backbone.prepare(options)
            console.print(f"[green]ok[/] {esc(name)}", highlight=False)
        except BenchboxError as exc:
            failed.append(name)
            err_console.print(f"[red]failed[/] {esc(name)}: {esc(exc)}", highlight=False)
    if failed:
        raise PluginError(f"could not fetch weights for {len(failed)} backbone(s): {', '.join(failed)}")


@plugin_app.command("new")
def plugin_new(
    name: str = typer.Argument(..., help="Short name, e.g. resnet (makes benchbox-resnet/)."),
    directory: Path = typer.Option(Path("."), "--dir", help="Where to create the package."),
):
    """Scaffold a backbone plugin package: entry point, a Keras ResNet50 backbone, conformance test."""
    from benchbox.scaffold import scaffold

    root = scaffold(name, directory)
    console.print(
        esc(f"created {root}\n  next: pip install -e {root} && benchbox plugins && python -m pytest {root}/tests")
    )
