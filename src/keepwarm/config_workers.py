"""A model's ``[workers]`` table (model.toml or ``keepwarm.load(workers=...)``), parsed.

::

    [workers]                   # the model runs in worker processes; every key optional
    processes = 2               # worker processes serving it (1 to 64, default 1); each
                                # loads the model once
    isolate = true              # its own processes, so that unloading it gives memory back

A model with a ``[workers]`` table runs in worker processes (a fresh interpreter each,
never a fork): a Python model that holds the GIL then uses as many cores as it has
processes. ``isolate = true`` (or ``Settings.workers.isolate``, server-wide) puts any
model, TensorFlow and ONNX ones included, in a worker process of its own. Without the
table and without isolation a model runs in the server's process, as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from keepwarm.config_table import TomlTable, call_argument
from keepwarm.errors import InvalidConfigError
from keepwarm.settings import WorkerSettings

WORKERS_KEYS = ("processes", "isolate")
MAX_PROCESSES = 64  # a bound, so that a typo (processes = 1000) cannot fork-bomb the host


@dataclass(frozen=True)
class WorkersConfig:
    """A model's worker processes. ``given``: the keys its table set; ``isolate`` follows
    ``Settings.workers.isolate`` when the table leaves it out (``with_defaults``)."""

    processes: int = 1
    isolate: bool = WorkerSettings.isolate
    given: frozenset[str] = field(default=frozenset(), compare=False)

    def with_defaults(self, settings: WorkerSettings) -> WorkersConfig:
        """The keys the model's table left out, from ``settings``."""
        if "isolate" in self.given:
            return self
        return replace(self, isolate=settings.isolate)


def workers_section(top: TomlTable) -> WorkersConfig | None:
    """The ``[workers]`` table of a model.toml's top level; None when absent."""
    if top.table.get("workers") is None:
        return None
    return _workers_table(top.table_at("workers", WORKERS_KEYS))


def workers_config(value: Mapping[str, Any], *, source: str) -> WorkersConfig:
    """A ``[workers]`` table given in code (``keepwarm.load(..., workers={...})``), checked
    as model.toml's is; ``source`` names it in errors."""
    if not isinstance(value, Mapping):
        raise InvalidConfigError(f"{source}: expected a table of worker settings, got {value!r}")
    return _workers_table(TomlTable(source, value, "workers.", WORKERS_KEYS))


def workers_argument(value: Any, defaults: WorkerSettings) -> WorkersConfig | None:
    """``keepwarm.load``'s ``workers=``: True (one process), a table, False or None (the
    model.toml decides, see ``RuntimeSpec``) as a config with the settings' defaults."""

    def parse(table: Mapping[str, Any]) -> WorkersConfig:
        return workers_config(table, source="workers=").with_defaults(defaults)

    return call_argument(value, "workers", WORKERS_KEYS, parse, WorkersConfig)


def _workers_table(table: TomlTable) -> WorkersConfig:
    processes = table.integer("processes", 1, MAX_PROCESSES)
    isolate = table.get("isolate", bool, "true or false")
    return WorkersConfig(
        processes=1 if processes is None else processes,
        isolate=WorkerSettings.isolate if isolate is None else isolate,
        given=frozenset(key for key in WORKERS_KEYS if table.table.get(key) is not None),
    )
