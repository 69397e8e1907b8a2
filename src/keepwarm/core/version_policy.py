"""Which versions of a model are served, and which one a request gets. Pure: no I/O.

- ``aspired_versions``: the versions the policy wants, from those on disk.
- ``keep_for_availability``: versions kept, although no longer wanted, so that the model
  never goes dark during a swap (load the new, then unload the old).
- ``default_version`` / ``resolve_version``: a request's version, label or nothing, to
  one ready version, or an error saying what exists.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from numbers import Integral

from keepwarm.config import ModelConfig, VersionPolicy
from keepwarm.errors import (
    InvalidConfigError,
    InvalidInputError,
    ModelNotFoundError,
    UnavailableError,
)


def aspired_versions(
    available: Iterable[int], policy: VersionPolicy, labels: Mapping[str, int]
) -> set[int]:
    """The versions of ``available`` to serve: ``latest`` the ``n`` highest, ``all`` every
    one, ``specific`` those listed; plus every present version a label names."""
    present = set(available)
    if policy.kind == "latest":
        wanted = set(sorted(present, reverse=True)[: policy.n])
    elif policy.kind == "all":
        wanted = set(present)
    elif policy.kind == "specific":
        wanted = present & set(policy.versions)
    else:
        raise InvalidConfigError(f"unknown version policy {policy.kind!r}")
    return wanted | (present & set(labels.values()))


def keep_for_availability(aspired: set[int], ready: set[int], available: set[int]) -> set[int]:
    """Versions to keep serving though not aspired: while no aspired version is READY, the
    highest READY version still on disk is kept; once one is READY, none is.

    A version no longer on disk is never kept (its files are gone; serving it would hide
    the removal)."""
    if aspired & ready:
        return set()
    leftovers = (ready & available) - aspired
    return {max(leftovers)} if leftovers else set()


def _default_target(config: ModelConfig) -> int | None:
    """The version ``config.default`` names (through its label), or None when unset."""
    if config.default is None:
        return None
    if isinstance(config.default, str):
        return config.labels.get(config.default)
    return config.default


def default_version(ready: set[int], config: ModelConfig) -> int | None:
    """The version a request naming none gets: the configured default (a version or a
    label) when it is READY, the highest READY version when no default is configured.

    None when the configured default is not READY: it never silently falls back to
    another version, so the caller can say clearly why there is no answer."""
    if config.default is None:
        return max(ready) if ready else None
    target = _default_target(config)
    return target if target in ready else None


def _model(model: str | None) -> str:
    return f"model {model!r}" if model else "the model"


def _ready_text(ready: Collection[int]) -> str:
    return ", ".join(str(v) for v in sorted(ready)) or "none"


def _labels_text(labels: Mapping[str, int]) -> str:
    if not labels:
        return "it has no labels"
    return "labels: " + ", ".join(f"{name} (version {v})" for name, v in sorted(labels.items()))


def _check(
    version: int, what: str, ready: set[int], pending: Collection[int], model: str | None
) -> int:
    if version in ready:
        return version
    if version in pending:
        raise UnavailableError(
            f"{what} of {_model(model)} is not ready yet; ready versions: {_ready_text(ready)}"
        )
    raise ModelNotFoundError(
        f"{what} of {_model(model)} is not served; ready versions: {_ready_text(ready)}"
    )


def resolve_version(
    requested: int | str | None,
    ready: set[int],
    config: ModelConfig,
    *,
    model: str | None = None,
    pending: Collection[int] = (),
) -> int:
    """The READY version a request gets.

    ``requested`` is a version number, a label name, or None (the default version).
    ``model`` names the model in messages. ``pending`` are versions that exist but are not
    READY yet (loading, warming): asking for one raises ``UnavailableError`` (worth a
    retry) rather than ``ModelNotFoundError``.
    """
    if isinstance(requested, bool):
        raise ModelNotFoundError(
            f"version {requested!r} of {_model(model)}: expected a version number or a label name"
        )
    if isinstance(requested, Integral):  # an int, or numpy's
        return _check(int(requested), f"version {requested}", ready, pending, model)
    if isinstance(requested, str):
        if requested not in config.labels:
            hint = " (to ask for a version, give a number)" if requested.isdigit() else ""
            raise ModelNotFoundError(
                f"label {requested!r} of {_model(model)} not found; "
                f"{_labels_text(config.labels)}{hint}"
            )
        version = config.labels[requested]
        return _check(version, f"version {version} (label {requested!r})", ready, pending, model)
    if requested is not None:  # 1.0, b"1", [1]: it fell through to the default version
        raise InvalidInputError(
            f"version {requested!r} ({type(requested).__name__}) of {_model(model)}: "
            "expected a version number (int), a label name (str) or None for the default"
        )
    found = default_version(ready, config)
    if found is not None:
        return found
    target = _default_target(config)
    if isinstance(config.default, str) and target is None:
        raise ModelNotFoundError(
            f"the default label {config.default!r} of {_model(model)} "
            f"is not defined; {_labels_text(config.labels)}"
        )
    if target is not None:
        what = f"the default version {target}"
        if isinstance(config.default, str):
            what += f" (label {config.default!r})"
        return _check(target, what, ready, pending, model)
    if pending:
        raise UnavailableError(
            f"no version of {_model(model)} is ready yet (loading: {_ready_text(pending)})"
        )
    raise ModelNotFoundError(f"{_model(model)} has no ready version")
