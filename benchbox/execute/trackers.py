"""The trackers a run turns on (its [tracking] tables), called through one small value.

A tracker (``benchbox.contracts.Tracker``) observes a run from the driver: it never changes what
the run computes. One that cannot start stops the run before anything is trained; one that raises
later stops it with an error naming the tracker (every fold already stored stays stored)."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field

from benchbox.errors import BenchboxError, PluginError


@dataclass
class ActiveTrackers:
    """(name, plugin, tracker object, options) of every tracker the run's [tracking] names."""

    items: list = field(default_factory=list)

    @classmethod
    def of(cls, registry, tracking: dict) -> ActiveTrackers:
        items = []
        for name, options in tracking.items():
            items.append((name, registry.trackers[name].plugin, registry.get("tracker", name), dict(options)))
        return cls(items)

    def _each(self, event: str, *args) -> None:
        for name, plugin, tracker, options in self.items:
            try:
                getattr(tracker, event)(*args, options)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BenchboxError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"tracker {name} (plugin {plugin}) failed in {event}: {type(exc).__name__}: {exc}",
                    detail=traceback.format_exc(),
                ) from exc

    def start(self, run_dir, manifest) -> None:
        self._each("start", run_dir, manifest)

    def fold_end(self, run_dir, record) -> None:
        self._each("fold_end", run_dir, record)

    def end(self, run_dir, result) -> None:
        self._each("end", run_dir, result)
