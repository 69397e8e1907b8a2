"""A model's ``[batching]`` table (model.toml or ``keepwarm.load(batching=...)``), parsed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from keepwarm.config_table import EMPTY, TomlTable, call_argument
from keepwarm.errors import InvalidConfigError
from keepwarm.settings import BatchingSettings
from keepwarm.settings_sections import MAX_BATCH_SIZE

BATCHING_KEYS = ("max_batch_size", "max_delay_ms", "max_queue", "pad_axes", "run_alone")


def check_max_batch_size(value: object, where: str = "max_batch_size") -> int:
    """``value`` when it is an integer from 1 to ``MAX_BATCH_SIZE``, else InvalidConfigError
    naming ``where`` and the range."""
    if type(value) is not int or not 1 <= value <= MAX_BATCH_SIZE:
        raise InvalidConfigError(
            f"{where}: expected an integer from 1 to {MAX_BATCH_SIZE}, got {value!r}"
        )
    return value


@dataclass(frozen=True)
class BatchingConfig:
    """A model's batching. ``given``: the keys its table set; the others follow the
    server's ``Settings.batching`` (``with_defaults``)."""

    max_batch_size: int = BatchingSettings.max_batch_size
    max_delay_ms: float = BatchingSettings.max_delay_ms
    max_queue: int = BatchingSettings.max_queue
    # axes >= 1 that may be padded, per input name ("*": every input); empty: none
    pad_axes: Mapping[str, tuple[int, ...]] = field(default_factory=lambda: EMPTY)
    # requests run at once, each alone, while nothing is queued (None: the batch slots)
    run_alone: int | None = None
    given: frozenset[str] = field(default=frozenset(), compare=False)

    def with_defaults(self, settings: BatchingSettings) -> BatchingConfig:
        """The keys the model's table left out, from ``settings``."""
        values = {
            key: getattr(settings, key)
            for key in ("max_batch_size", "max_delay_ms", "max_queue")
            if key not in self.given
        }
        return replace(self, **values)


def batching_section(top: TomlTable) -> BatchingConfig | None:
    """The ``[batching]`` table of a model.toml's top level; None when absent."""
    if top.table.get("batching") is None:
        return None
    return _batching_table(top.table_at("batching", BATCHING_KEYS))


def batching_config(value: Mapping[str, Any], *, source: str) -> BatchingConfig:
    """A ``[batching]`` table given in code (``keepwarm.load(..., batching={...})``),
    checked as model.toml's is; ``source`` names it in errors."""
    if not isinstance(value, Mapping):
        raise InvalidConfigError(f"{source}: expected a table of batching settings, got {value!r}")
    return _batching_table(TomlTable(source, value, "batching.", BATCHING_KEYS))


def batching_argument(value: Any, defaults: BatchingSettings) -> BatchingConfig | None:
    """``keepwarm.load``'s ``batching=``: True (the defaults), a table, False or None
    (off here; None lets a model.toml decide, see ``RuntimeSpec``), as a config with the
    settings' defaults."""

    def parse(table: Mapping[str, Any]) -> BatchingConfig:
        return batching_config(table, source="batching=").with_defaults(defaults)

    return call_argument(value, "batching", BATCHING_KEYS, parse, BatchingConfig)


def _batching_table(table: TomlTable) -> BatchingConfig:
    defaults = BatchingConfig()
    delay = table.get("max_delay_ms", (int, float), "a number of milliseconds >= 0")
    if delay is not None and not delay >= 0:  # TOML's nan too: it failed the load only
        raise table.fail("max_delay_ms", "a number of milliseconds >= 0", delay)
    size = table.integer("max_batch_size", 1, MAX_BATCH_SIZE)
    queue = table.integer("max_queue", 1)
    alone = table.integer("run_alone", 1)
    return BatchingConfig(
        max_batch_size=defaults.max_batch_size if size is None else size,
        max_delay_ms=defaults.max_delay_ms if delay is None else float(delay),
        max_queue=defaults.max_queue if queue is None else queue,
        pad_axes=_pad_axes(table),
        run_alone=alone,
        given=frozenset(key for key in BATCHING_KEYS if table.table.get(key) is not None),
    )


def _pad_axes(batching: TomlTable) -> Mapping[str, tuple[int, ...]]:
    value = batching.table.get("pad_axes")
    if value is None:
        return EMPTY
    expected = "a list of axes >= 1 (axis 0 is the batch), or a table of input name to one"
    table = value if isinstance(value, dict) else {"*": value}
    found: dict[str, tuple[int, ...]] = {}
    for name, axes in table.items():
        if not isinstance(axes, list) or not all(
            isinstance(a, int) and not isinstance(a, bool) and a >= 1 for a in axes
        ):
            raise batching.fail("pad_axes" if name == "*" else f"pad_axes.{name}", expected, axes)
        if axes:
            found[name] = tuple(sorted(set(axes)))
    return MappingProxyType(found) if found else EMPTY
