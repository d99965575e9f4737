"""Plugin discovery: every module registered under the ``benchbox`` entry-point group.

First-party plugins (plugins/ in this repository) are found exactly like a third party's:
through the entry points of an installed distribution. A plugin that fails to import is
recorded as broken with its error, and the others keep working.
"""

from __future__ import annotations

import importlib.metadata as md
from dataclasses import dataclass, field
from typing import Any

import pluggy

from benchbox import hookspecs
from benchbox.contracts import Availability
from benchbox.errors import PluginError

GROUP = "benchbox"


@dataclass
class Entry:
    """One contributed implementation and where it came from."""

    kind: str  # "dataset" | "backbone" | "evaluator"
    name: str
    obj: Any
    origin: str  # "distribution version (entry point)"

    @property
    def availability(self) -> Availability:
        try:
            return self.obj.availability()
        except Exception as exc:  # a plugin's own check must not break the listing
            return Availability(False, f"availability check failed: {exc}")


@dataclass
class Registry:
    pm: pluggy.PluginManager
    datasets: dict[str, Entry] = field(default_factory=dict)
    backbones: dict[str, Entry] = field(default_factory=dict)
    evaluators: dict[str, Entry] = field(default_factory=dict)
    broken: list[tuple[str, str]] = field(default_factory=list)  # (plugin, error)

    def table(self, kind: str) -> dict[str, Entry]:
        return {"dataset": self.datasets, "backbone": self.backbones, "evaluator": self.evaluators}[kind]

    def get(self, kind: str, name: str):
        """The plugin object, or a PluginError listing the valid names."""
        table = self.table(kind)
        if name not in table:
            raise PluginError(f"unknown {kind} plugin {name!r}; available: {', '.join(sorted(table)) or 'none'}"
                              " (see `benchbox plugins`)")
        entry = table[name]
        avail = entry.availability
        if not avail.ok:
            raise PluginError(f"{kind} plugin {name!r} ({entry.origin}) is unavailable: {avail.reason}")
        return entry.obj


def _origin(ep: md.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    if dist is not None:
        return f"{dist.metadata['Name']} {dist.version}"
    return ep.value


def load_registry(extra_plugins=()) -> Registry:
    """Discover entry-point plugins (plus ``extra_plugins`` modules/objects, for tests)."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    registry = Registry(pm=pm)
    origins: dict[str, str] = {}
    seen = set()
    for ep in md.entry_points(group=GROUP):
        if ep.name in seen:
            continue
        seen.add(ep.name)
        try:
            module = ep.load()
        except Exception as exc:
            registry.broken.append((ep.name, f"{type(exc).__name__}: {exc} (from {ep.value}, {_origin(ep)})"))
            continue
        if pm.is_registered(module):
            continue
        pm.register(module, name=ep.name)
        origins[ep.name] = _origin(ep)
    for i, plugin in enumerate(extra_plugins):
        name = f"extra-{i}-{getattr(plugin, '__name__', type(plugin).__name__)}"
        pm.register(plugin, name=name)
        origins[name] = getattr(plugin, "__name__", name)
    for kind, hook in (("dataset", "benchbox_datasets"), ("backbone", "benchbox_backbones"),
                       ("evaluator", "benchbox_evaluators")):
        for impl in getattr(pm.hook, hook).get_hookimpls():
            try:
                contributed = impl.function() or []
            except Exception as exc:
                registry.broken.append((impl.plugin_name, f"{hook} raised {type(exc).__name__}: {exc}"))
                continue
            for obj in contributed:
                table = registry.table(kind)
                origin = f"{origins.get(impl.plugin_name, impl.plugin_name)} ({impl.plugin_name})"
                if obj.name in table:
                    registry.broken.append((impl.plugin_name, f"{kind} {obj.name!r} already provided by "
                                            f"{table[obj.name].origin}; ignored"))
                    continue
                table[obj.name] = Entry(kind, obj.name, obj, origin)
    return registry
