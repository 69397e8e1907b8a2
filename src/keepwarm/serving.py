"""The serving map: per model, an immutable routing table read by requests without a lock.

A ``Route`` maps the default, each label and each version of one model to the loaded
entry that answers it (and the ``LeasedModel`` a lease hands out). The map is replaced
whole (copy on write) when a version becomes READY or leaves READY, and when the listing
changes; a request reads ``routes.get(name)`` and one dict of the route, then takes its
lease (``Manager.try_lease``), which checks the entry is still READY.

Only READY versions that are on disk and wanted by the rules of ``core.version_policy``
are routed; anything else (not ready, on-demand loads, errors) is the slow path's.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from keepwarm.core.entry import Entry
from keepwarm.core.ids import ModelId
from keepwarm.core.states import State
from keepwarm.core.version_policy import default_version
from keepwarm.model import LeasedModel
from keepwarm.sources.listing import ModelListing


@dataclass(frozen=True, slots=True)
class Target:
    """One READY version: its manager entry and what a lease on it hands out."""

    entry: Entry
    model: LeasedModel


@dataclass(frozen=True, slots=True)
class Route:
    default: Target | None
    versions: Mapping[int, Target] = field(default_factory=dict)
    labels: Mapping[str, Target] = field(default_factory=dict)

    def find(self, version: int | str | None) -> Target | None:
        """The target of a request's version (a number, a label, or None)."""
        if version is None:
            return self.default
        kind = type(version)
        if kind is int:
            return self.versions.get(version)  # type: ignore[arg-type]
        if kind is str:
            return self.labels.get(version)  # type: ignore[arg-type]
        return None  # bool and the rest: the slow path says what is wrong


class ServingMap:
    """``on_transition`` is a manager watcher (called under the manager's lock);
    ``set_listing`` is called by the reconciliation. Both republish under this map's own
    lock, which is never held while another is taken."""

    def __init__(self, *, on_demand: bool) -> None:
        self._on_demand = on_demand
        self._lock = threading.Lock()
        #: name -> Route: replaced whole, never changed in place (read it without a lock).
        self.routes: Mapping[str, Route] = {}
        self._ready: dict[str, dict[int, Target]] = {}
        self._listing: Mapping[str, ModelListing] = {}

    def get(self, name: str) -> Route | None:
        return self.routes.get(name)

    def on_transition(self, entry: Entry) -> None:
        key = entry.key
        if not isinstance(key, ModelId):
            return
        name, version = key
        with self._lock:
            ready = self._ready.setdefault(name, {})
            if entry.state is State.READY:
                ready[version] = Target(entry, LeasedModel(entry.model, name, version))
            elif version in ready and ready[version].entry is entry:
                del ready[version]
            else:
                return
            self._publish((name,))

    def set_listing(self, listing: Mapping[str, ModelListing]) -> None:
        with self._lock:
            self._listing = listing
            self._publish(set(self.routes) | set(listing))

    def _publish(self, names: Iterable[str]) -> None:
        routes = dict(self.routes)
        for name in names:
            route = self._route(name)
            if route is None:
                routes.pop(name, None)
            else:
                routes[name] = route
        self.routes = routes  # one assignment: readers see the old map or the new one

    def _route(self, name: str) -> Route | None:
        model = self._listing.get(name)
        if model is None or model.blocked:
            return None
        ready = self._ready.get(name, {})
        # A READY version no longer on disk is draining: never routed.
        on_disk = {v: t for v, t in ready.items() if v in model.versions}
        config = model.config
        if self._on_demand and not config.pinned:
            # The default is chosen among every complete version (it is loaded on use).
            choices = {v for v, found in model.versions.items() if found.complete}
        else:
            choices = set(on_disk)
        chosen = default_version(choices, config)
        default = on_disk.get(chosen) if chosen is not None else None
        labels = {label: on_disk[v] for label, v in config.labels.items() if v in on_disk}
        return Route(default, on_disk, labels)  # plain dicts, never changed once published
