"""The one place the service reads ``Repository.status()``: model -> version -> (state,
reason), with the state a plain string."""

from __future__ import annotations

from keepwarm.repository_status import RepositoryStatus

VersionStates = dict[int, tuple[str, str]]  # version -> (state, reason)


def model_states(status: RepositoryStatus) -> dict[str, VersionStates]:
    return {
        name: {v: (i.state.value, i.reason or "") for v, i in sorted(model.versions.items())}
        for name, model in status.models.items()
    }
