"""Reconciliation: one model's listing turned into manager calls.

Load the versions the policy wants, keep the old one serving until a new one is READY
(availability-preserving), drain versions no longer wanted, and forget versions gone from
disk once they hold nothing. Called under the catalog's lock.
"""

from __future__ import annotations

import logging

from keepwarm.core.ids import ModelId
from keepwarm.core.manager import Manager
from keepwarm.core.states import State
from keepwarm.core.version_policy import aspired_versions, keep_for_availability
from keepwarm.errors import KeepwarmError
from keepwarm.repository_catalog import Catalog
from keepwarm.sources.listing import Listing, ModelListing

log = logging.getLogger("keepwarm.repository")


class Reconciler:
    def __init__(self, catalog: Catalog, manager: Manager, *, on_demand: bool) -> None:
        self._catalog = catalog
        self.manager = manager
        self.on_demand = on_demand

    def reconcile(self, name: str) -> None:
        # One model whose reconciliation fails (a version that cannot start is handled in
        # ``_ensure``) must not stop the others from being reconciled; the next scan retries.
        try:
            self._reconcile(name)
        except KeepwarmError as exc:
            log.warning("model %r: %s", name, exc.message)

    def _reconcile(self, name: str) -> None:
        catalog = self._catalog
        model = catalog.listing.get(name)
        resident = {
            key.version
            for key in self._known(name)
            if self.manager.state(key) in (State.LOADING, State.WARMING, State.READY)
        }
        wanted: set[int] = set()
        if model is not None and not model.blocked:
            config = model.config
            available = {v for v, listing in model.versions.items() if listing.complete}
            aspired = aspired_versions(available, config.policy, config.labels)
            # Still on disk, though perhaps no longer judged whole (being rewritten, or a
            # model.toml naming another runtime): a READY version keeps serving until
            # something else is READY.
            ready = catalog.ready(model)
            wanted = aspired | keep_for_availability(aspired, ready, set(model.versions))
            if not self.on_demand or config.pinned:
                for version in sorted(aspired):
                    self._ensure(ModelId(name, version), model)
            else:
                wanted |= available  # on demand: any listed version may be asked for
        for key in [k for k in catalog.refused if k.name == name and k.version not in wanted]:
            del catalog.refused[key]
        for version in resident - wanted:
            self.manager.unload(ModelId(name, version), "no longer wanted")
        self.forget_gone(name)

    def _ensure(self, key: ModelId, model: ModelListing) -> None:
        """Start loading ``key`` if it is not loaded. A version that cannot start (say,
        larger than the whole budget) does not stop the others; why is kept for
        ``status()`` and logged once per distinct reason (it is tried again every scan)."""
        refused = self._catalog.refused
        try:
            spec = self._catalog.spec(model, key.version)
            self.manager.ensure(key, spec, pinned=model.config.pinned)
        except KeepwarmError as exc:
            if refused.get(key) != exc.message:
                log.warning("%s is not loaded: %s", key, exc.message)
            refused[key] = exc.message
        else:
            refused.pop(key, None)

    def forget_gone(self, name: str) -> None:
        """Drop versions no longer on disk once they hold nothing: their spec and their
        manager entry (and so their line in ``status()``)."""
        catalog = self._catalog
        model = catalog.listing.get(name)
        on_disk = model.versions if model is not None else {}
        for key in self._known(name):
            if key.version in on_disk:
                continue
            catalog.refused.pop(key, None)
            if self.manager.forget(key):  # not while it holds memory, a load or a request
                del catalog.specs[key]

    def _known(self, name: str) -> list[ModelId]:
        return [key for key in self._catalog.specs if key.name == name]


def log_config_changes(before: Listing, after: Listing) -> None:
    """Say, once per change, that a model's ``model.toml`` became invalid (what is served
    goes on with its last good configuration, or nothing loads when there was none) or
    valid again."""
    for name, model in sorted(after.items()):
        was = before.get(name)
        error = model.config_error
        if error == (was.config_error if was is not None else None):
            continue
        if error is None:
            log.warning("model %r: its model.toml is valid again", name)
        elif model.blocked:
            log.warning(
                "model %r: its model.toml is invalid; nothing loads until it is fixed: %s",
                name,
                error,
            )
        else:
            log.warning(
                "model %r: its model.toml is invalid; serving on with its last good "
                "configuration: %s",
                name,
                error,
            )
