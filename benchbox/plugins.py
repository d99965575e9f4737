"""Plugin discovery: every module registered under the ``benchbox`` entry-point group.

First-party plugins (plugins/ in this repository) are found exactly like a third party's:
through the entry points of an installed distribution. Hooks are called through pluggy. A plugin
that fails to import, whose contribution hook raises, or that implements a ``benchbox_*`` hook
that does not exist (a typo pluggy's ``check_pending`` finds) is recorded as broken with the
reason, and the others keep working.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib.metadata as md
import traceback
from dataclasses import dataclass, field
from typing import Any

import pluggy

from benchbox import hookspecs
from benchbox.contracts import Availability, Backbone, BackboneFamily
from benchbox.errors import PluginError

GROUP = "benchbox"
#: every kind of contribution: the hook that contributes it, and the Registry attribute that holds its table
KINDS = {
    "dataset": ("benchbox_datasets", "datasets"),
    "backbone": ("benchbox_backbones", "backbones"),
    "evaluator": ("benchbox_evaluators", "evaluators"),
    "data source": ("benchbox_data_sources", "data_sources"),
    "split strategy": ("benchbox_split_strategies", "split_strategies"),
    "executor": ("benchbox_executors", "executors"),
    "output format": ("benchbox_output_formats", "output_formats"),
    "tracker": ("benchbox_trackers", "trackers"),
    "fold inspector": ("benchbox_fold_inspectors", "fold_inspectors"),
}


@dataclass
class Entry:
    """One contributed implementation and where it came from."""

    kind: str  # a key of KINDS: "dataset", "backbone", "split strategy", "output format"...
    name: str
    obj: Any
    origin: str  # "distribution version (plugin name)"
    plugin: str  # the registered plugin's name

    @property
    def availability(self) -> Availability:
        try:
            return self.obj.availability()
        except Exception as exc:  # a plugin's own check must not break the listing
            return Availability(False, f"availability check failed: {type(exc).__name__}: {exc}")


class _UnavailableMember(Backbone):
    """A family member named while its family cannot work here (e.g. timm not installed)."""

    def __init__(self, name: str, family: BackboneFamily):
        self.name, self.framework, self._family = name, family.framework, family
        self.description = family.description

    def availability(self) -> Availability:
        return self._family.availability()


class BackboneTable(dict):
    """Backbones by name: the explicitly contributed ones, then ``PREFIX/MODEL`` names resolved
    through a family on first use. Iterating lists the explicit ones only (a family may hold
    thousands; `benchbox backbones list` asks the families)."""

    def __init__(self):
        super().__init__()
        self.families: dict[str, tuple[BackboneFamily, str, str]] = {}  # prefix -> (family, origin, plugin)

    def _resolve(self, name: str) -> Entry | None:
        prefix, _, model = name.partition("/")
        if prefix not in self.families or not model:
            return None
        family, origin, plugin = self.families[prefix]
        if not family.availability().ok:
            obj = _UnavailableMember(name, family)
        else:
            try:
                obj = family.backbone(model)
            except Exception as exc:
                raise PluginError(
                    f"plugin {plugin}: backbone family {prefix!r} failed to build {name!r}: {type(exc).__name__}: {exc}"
                ) from exc
            if obj is None:
                return None
        entry = Entry("backbone", name, obj, origin, plugin)
        dict.__setitem__(self, name, entry)
        return entry

    def __contains__(self, name) -> bool:
        return dict.__contains__(self, name) or (isinstance(name, str) and self._resolve(name) is not None)

    def __getitem__(self, name) -> Entry:
        if dict.__contains__(self, name):
            return dict.__getitem__(self, name)
        entry = self._resolve(name) if isinstance(name, str) else None
        if entry is None:
            raise KeyError(name)
        return entry

    def get(self, name, default=None):
        return self[name] if name in self else default

    def family_models(self, prefix: str) -> list[str]:
        family = self.families[prefix][0]
        if not family.availability().ok:
            return []
        try:
            return [f"{prefix}/{m}" for m in family.models()]
        except Exception:  # a listing problem must not break an error message
            return []

    def closest(self, name: str, n: int = 5) -> list[str]:
        """Names like ``name`` (a typo's likely meaning), from the explicit ones and the family
        its prefix names."""
        prefix = name.partition("/")[0]
        pool = list(dict.keys(self))
        if prefix in self.families:
            pool += self.family_models(prefix)
        return difflib.get_close_matches(name, pool, n=n, cutoff=0.6)

    def listing(self, framework: str | None = None, pattern: str | None = None) -> list[str]:
        """Every name, explicit and family, optionally of one framework/prefix and matching a
        shell-style pattern (matched against the whole name and against the part after the '/')."""
        names = set(dict.keys(self))
        for prefix, (family, _, _) in self.families.items():
            if framework in (None, prefix, family.framework):  # only ask the families that can match
                names.update(self.family_models(prefix))
        out = []
        for name in sorted(names):
            entry = dict.get(self, name)
            prefix, _, model = name.partition("/")
            frameworks = {prefix, getattr(entry.obj, "framework", "")} if entry else {prefix}
            if prefix in self.families:
                frameworks.add(self.families[prefix][0].framework)
            if framework and framework not in frameworks:
                continue
            if pattern and not (fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(model, pattern)):
                continue
            out.append(name)
        return out


def _tables() -> dict[str, dict[str, Entry]]:
    return {k: (BackboneTable() if k == "backbone" else {}) for k in KINDS}


@dataclass
class Registry:
    pm: pluggy.PluginManager
    tables: dict[str, dict[str, Entry]] = field(default_factory=_tables)
    broken: list[tuple[str, str]] = field(default_factory=list)  # (plugin, error)

    # one table per kind, by name: registry.datasets, .backbones, .split_strategies... (made from KINDS below)

    def table(self, kind: str) -> dict[str, Entry]:
        return self.tables[kind]

    def get(self, kind: str, name: str):
        """The plugin object, or a PluginError listing the valid names."""
        table = self.table(kind)
        name = self.canonical(kind, name)
        if name not in table:
            raise PluginError(unknown_plugin_message(table, kind, name))
        entry = table[name]
        avail = entry.availability
        if not avail.ok:
            raise PluginError(f"{kind} plugin {name!r} ({entry.origin}) is unavailable: {avail.reason}")
        return entry.obj

    def canonical(self, kind: str, name: str) -> str:
        """``name``, or the name of the contribution that declares it among its ``aliases`` (``md``)."""
        table = self.table(kind)
        if isinstance(table, BackboneTable) or name in table:
            return name
        return next((n for n, e in table.items() if name in (getattr(e.obj, "aliases", ()) or ())), name)

    def origin_of(self, kind: str, name: str) -> str:
        entry = self.table(kind).get(name)
        return entry.plugin if entry else name

    def call_lifecycle(self, hook: str, **kwargs) -> None:
        """Call a lifecycle hook through pluggy; a raising implementation becomes a PluginError
        naming the plugin (found from the traceback) and the hook."""
        try:
            getattr(self.pm.hook, hook)(**kwargs)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            culprit = self._culprit(exc)
            raise PluginError(
                f"plugin {culprit} failed in {hook}: {type(exc).__name__}: {exc}", detail=traceback.format_exc()
            ) from exc

    def call_each(self, hook: str, **kwargs) -> tuple[list[tuple[str, Any]], list[str]]:
        """Call a hook once per plugin (isolated): [(plugin, result)] and a message per failure."""
        results, problems = [], []
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            caller = self.pm.subset_hook_caller(
                hook, remove_plugins=[p for n, p in self.pm.list_name_plugin() if n != impl.plugin_name]
            )
            try:
                results.extend((impl.plugin_name, r) for r in caller(**kwargs))  # one result: this plugin's
            except Exception as exc:
                problems.append(f"plugin {impl.plugin_name} failed in {hook}: {type(exc).__name__}: {exc}")
        return results, problems

    def contributions(self, hook: str) -> list[tuple[str, Any]]:
        """(plugin, object) for every object a contributing hook's implementations return; an implementation
        that raises makes its plugin broken."""
        contributed, problems = self.call_each(hook)
        self.broken += [(p.split()[1], p) for p in problems]
        return [(plugin, obj) for plugin, objs in contributed for obj in (objs or [])]

    def _culprit(self, exc: BaseException) -> str:
        modules = {getattr(p, "__name__", ""): n for n, p in self.pm.list_name_plugin() if p is not None}
        name = "unknown"
        for frame, _ in traceback.walk_tb(exc.__traceback__):
            mod = frame.f_globals.get("__name__", "")
            top = mod.split(".")[0]
            for candidate in (mod, top):
                if candidate in modules:
                    name = modules[candidate]
        return name


for _kind, (_, _attribute) in KINDS.items():
    setattr(Registry, _attribute, property(lambda self, kind=_kind: self.tables[kind], doc=f"{_kind} entries by name"))


def unknown_plugin_message(table: dict, kind: str, name: str) -> str:
    """What to say when a suite or command names a plugin nobody provides: the closest names first."""
    if isinstance(table, BackboneTable):
        close = table.closest(name)
        families = ", ".join(f"{p}/<model>" for p in sorted(table.families))
        guess = f"did you mean {', '.join(close)}? " if close else ""
        hint = "`benchbox backbones list` shows them all" + (f"; families: {families}" if families else "")
        return f"unknown {kind} plugin {name!r}; {guess}available: {', '.join(sorted(table)) or 'none'} ({hint})"
    close = difflib.get_close_matches(name, list(table), n=3, cutoff=0.6)
    guess = f"did you mean {', '.join(close)}? " if close else ""
    what = f"{kind} plugin" if kind in ("dataset", "evaluator", "data source") else kind
    return f"unknown {what} {name!r}; {guess}available: {', '.join(sorted(table)) or 'none'} (see `benchbox plugins`)"


def _origin(ep: md.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    if dist is not None:
        return f"{dist.metadata['Name']} {dist.version}"
    return ep.value


def _check_pending(pm: pluggy.PluginManager, registry: Registry) -> None:
    """Unregister every plugin that implements a hook no spec declares, and say which and why."""
    known = {n for n in dir(hookspecs) if n.startswith("benchbox_")}
    for name, plugin in list(pm.list_name_plugin()):
        if plugin is None:
            continue
        unknown = {
            impl.function.__name__
            for hook in pm.get_hookcallers(plugin) or []
            for impl in hook.get_hookimpls()
            if impl.plugin is plugin and hook.name not in known
        }
        unmarked = {
            attr
            for attr in dir(plugin)
            if attr in known and callable(getattr(plugin, attr, None)) and pm.parse_hookimpl_opts(plugin, attr) is None
        }
        if unknown or unmarked:
            pm.unregister(plugin)
            reasons = []
            if unknown:
                reasons.append(
                    f"implements unknown hook(s) {', '.join(sorted(unknown))} — a typo? "
                    f"known hooks: {', '.join(sorted(known))}"
                )
            if unmarked:
                reasons.append(f"{', '.join(sorted(unmarked))} not marked with @benchbox.hookimpl")
            registry.broken.append((name, "; ".join(reasons)))
    pm.check_pending()  # nothing unknown may remain


def load_registry(extra_plugins=()) -> Registry:
    """Discover entry-point plugins (plus ``extra_plugins`` modules/objects, for tests)."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    registry = Registry(pm=pm)
    origins: dict[str, str] = {}
    for ep in md.entry_points(group=GROUP):
        if pm.has_plugin(ep.name):
            continue
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
    _check_pending(pm, registry)

    def origin(plugin_name: str) -> str:
        return f"{origins.get(plugin_name, plugin_name)} ({plugin_name})"

    for kind, (hook, _) in KINDS.items():
        table = registry.table(kind)
        for plugin_name, obj in registry.contributions(hook):
            name = getattr(obj, "name", "")
            if not isinstance(name, str) or not name:
                registry.broken.append((plugin_name, f"contributed a {kind} without a name ({type(obj).__name__})"))
            elif name in table:
                registry.broken.append(
                    (plugin_name, f"{kind} {name!r} already provided by {table[name].origin}; ignored")
                )
            else:
                table[name] = Entry(kind, name, obj, origin(plugin_name), plugin_name)
    families = registry.backbones.families
    for plugin_name, family in registry.contributions("benchbox_backbone_families"):
        prefix = getattr(family, "prefix", "")
        if not isinstance(prefix, str) or not prefix or "/" in prefix:
            registry.broken.append((plugin_name, f"contributed a backbone family without a valid prefix ({prefix!r})"))
        elif prefix in families:
            registry.broken.append(
                (plugin_name, f"backbone family {prefix!r} already provided by {families[prefix][1]}")
            )
        else:
            families[prefix] = (family, origin(plugin_name), plugin_name)
    return registry
