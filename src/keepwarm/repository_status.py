"""``Repository.status()``: every model and version, as typed objects.

A version's ``state`` is the manager's (``NEW`` when it was never loaded); the listing's
own view of its files is a separate field, ``disk``: ``taken`` (whole and settled: it may
load), ``waiting for files`` (new or changing files, an empty directory, an incomplete
format; ``disk_reason`` says which) or ``gone from disk`` (listed until it has unloaded).
``to_dict()`` gives plain values for JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from keepwarm.core.entry import EntryStatus
from keepwarm.core.ids import ModelId
from keepwarm.core.states import State
from keepwarm.process_memory import ProcessMemory, process_memory
from keepwarm.repository_catalog import Catalog


class DiskState(StrEnum):
    TAKEN = "taken"
    WAITING_FOR_FILES = "waiting for files"
    GONE = "gone from disk"


@dataclass(frozen=True)
class VersionStatus:
    """``reason``: why the manager's state is what it is; for a version never loaded, why
    it was not (its files not taken yet, or ``refused``: why it could not start loading,
    e.g. larger than the whole memory budget)."""

    version: int
    state: State
    disk: DiskState
    reason: str | None = None
    disk_reason: str | None = None  # why its files are not taken; None when they are
    refused: str | None = None
    manager: EntryStatus | None = None  # leases, bytes, failures...; None: never loaded

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = self.manager.to_dict() if self.manager is not None else {}
        out.update(
            version=self.version,
            state=self.state.value,
            disk=self.disk.value,
            reason=self.reason,
            disk_reason=self.disk_reason,
            refused=self.refused,
        )
        return out


@dataclass(frozen=True)
class ModelStatus:
    name: str
    config_error: str | None  # why model.toml is bad now (the last good one is in force)
    versions: dict[int, VersionStatus] = field(default_factory=dict)
    blocked: bool = False  # model.toml was never good: no version loads until it is fixed

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "config_error": self.config_error,
            "blocked": self.blocked,
            "versions": {str(v): s.to_dict() for v, s in self.versions.items()},
        }


@dataclass(frozen=True)
class RepositoryStatus:
    """``processes`` (when asked for: reading one costs about 20 ms once TensorFlow is
    loaded): this process (``"server"``) and its worker processes, each with its PSS and
    the bytes unloading did not give back (``keepwarm.process_memory``)."""

    location: str
    listing_error: str | None  # why the last scan failed (the listing before it is in force)
    models: dict[str, ModelStatus] = field(default_factory=dict)
    processes: list[ProcessMemory] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "listing_error": self.listing_error,
            "models": {name: m.to_dict() for name, m in self.models.items()},
            "processes": [p.to_dict() for p in self.processes],
        }


_IDLE = (State.NEW, State.UNLOADED)


def repository_status(catalog: Catalog, *, processes: bool = False) -> RepositoryStatus:
    snapshot = catalog.manager.snapshot()
    models: dict[str, ModelStatus] = {}
    for name, model in sorted(catalog.listing.items()):
        versions: dict[int, VersionStatus] = {}
        for version, found in sorted(model.versions.items()):
            key = ModelId(name, version)
            entry = snapshot.get(key)
            state = entry.state if entry is not None else State.NEW
            refused = catalog.refused.get(key)
            reason = entry.reason if entry is not None else None
            if state in _IDLE:
                reason = found.reason if not found.complete else (refused or reason)
            disk = DiskState.TAKEN if found.complete else DiskState.WAITING_FOR_FILES
            versions[version] = VersionStatus(
                version, state, disk, reason, found.reason, refused, entry
            )
        for other, entry in sorted(snapshot.items(), key=lambda item: str(item[0])):
            if isinstance(other, ModelId) and other.name == name and other.version not in versions:
                versions[other.version] = VersionStatus(
                    other.version, entry.state, DiskState.GONE, entry.reason, None, None, entry
                )
        models[name] = ModelStatus(
            name, model.config_error, dict(sorted(versions.items())), model.blocked
        )
    rows = process_memory() if processes else []
    return RepositoryStatus(catalog.location, catalog.listing_error, models, rows)
