"""The one place the service reads ``Repository.status()``: model -> version -> (state,
reason), with the state a plain string.

The seam with the core: ``status()`` is a dict of dicts today and becomes a typed
``RepositoryStatus`` (``.models[name].versions[v].state``, an enum) with the core's
issue; both are read here, and nowhere else.
"""

from __future__ import annotations

from typing import Any

VersionStates = dict[int, tuple[str, str]]  # version -> (state, reason)


def model_states(status: Any) -> dict[str, VersionStates]:
    models = status.models if hasattr(status, "models") else status
    return {name: _versions(model) for name, model in models.items()}


def _versions(model: Any) -> VersionStates:
    versions = model.versions if hasattr(model, "versions") else model["versions"]
    return {int(v): (_text(_field(info, "state")), _field(info, "reason") or "")
            for v, info in sorted(versions.items(), key=lambda item: int(item[0]))}  # fmt: skip


def _field(info: Any, name: str) -> Any:
    return info.get(name) if isinstance(info, dict) else getattr(info, name, None)


def _text(state: Any) -> str:
    return str(getattr(state, "value", state) or "UNKNOWN")
