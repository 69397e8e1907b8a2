"""The one place the service reads ``Repository.status()``: model -> version -> (state,
reason), with the state a plain string, and the views built on it (versions, readiness
of a model, statistics rows, the repository index)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from keepwarm.batching.registry import live_batchers
from keepwarm.errors import ModelNotFoundError
from keepwarm.repository import Repository
from keepwarm.repository_status import ModelStatus, RepositoryStatus
from keepwarm.service_leases import held_error
from keepwarm.service_names import check_name, parse_version
from keepwarm.service_stats import Statistics

VersionStates = dict[int, tuple[str, str]]  # version -> (state, reason)


def model_states(status: RepositoryStatus) -> dict[str, VersionStates]:
    """A READY version whose batch sizes failed to warm after it began to serve has that
    failure as its reason (``BatchedModel.warm_failure``)."""
    unwarmed = {
        (view.model, view.version): view.warm_failure
        for view in live_batchers()
        if view.warm_failure is not None
    }
    return {
        name: {
            v: (i.state.value, _reason(i.state.value, i.reason, unwarmed.get((name, v))))
            for v, i in sorted(model.versions.items())
        }
        for name, model in status.models.items()
    }


def _reason(state: str, reason: str | None, unwarmed: str | None) -> str:
    if state != "READY" or unwarmed is None:
        return reason or ""
    return unwarmed if not reason else f"{reason}; {unwarmed}"


class StatusView:
    """The read side of the service. ``held(name)``: why the repository API keeps a
    model unloaded (or None), ``held_all()``: every such model; ``public``: a message
    with paths made relative to the repository root."""

    def __init__(
        self,
        repository: Repository,
        statistics: Statistics,
        *,
        held: Callable[[str], str | None],
        held_all: Callable[[], dict[str, str]],
        public: Callable[[str], str],
    ) -> None:
        self.repository = repository
        self.statistics_table = statistics
        self.held = held
        self.held_all = held_all
        self.public = public

    def states(self) -> dict[str, VersionStates]:
        return model_states(self.repository.status())

    def versions(self, name: str) -> list[tuple[int, str, str]]:
        """(version, state, reason) for each version of ``name``, oldest first; a model
        the repository API holds unloaded has none (``held`` says why)."""
        return self.model(name)[0]

    def model(self, name: str) -> tuple[list[tuple[int, str, str]], str | None]:
        """``versions(name)`` and why the model's ``model.toml`` is invalid now (its last
        good configuration in force), or None, from one status of the repository; a model
        the repository API holds unloaded is ``UnavailableError`` saying so, as a request
        for it is (an empty list of versions told a TF Serving client nothing)."""
        why = self.held(name)
        if why is not None:
            raise held_error(name, why)
        status = self.repository.status()
        name = check_name(name)
        versions = model_states(status).get(name)
        if versions is None:
            raise ModelNotFoundError(f"model {name!r} not found in the repository")
        rows = [(v, state, self.public(reason)) for v, (state, reason) in versions.items()]
        model = status.models[name]
        return rows, None if model.config_error is None else self.public(config_problem(model))

    def model_ready(self, name: str, version: str | None) -> bool:
        """Whether ``version`` of ``name`` (a number, a label, or None: any) is READY; an
        unknown version or label is ``ModelNotFoundError``."""
        wanted = parse_version(version)
        states = {v: state for v, state, _ in self.versions(name)}
        if isinstance(wanted, int):
            if wanted not in states:
                raise ModelNotFoundError(f"model {name!r} has no version {wanted}")
            return states[wanted] == "READY"
        if isinstance(wanted, str) and states:  # the version the label names, if READY now
            lease = self.repository.try_acquire(name, wanted)  # never loads nor waits
            if lease is not None:
                lease.release()
            return lease is not None
        return "READY" in states.values()

    def statistics(self, name: str | None, version: str | None) -> list[dict[str, Any]]:
        """Triton's statistics extension: every version of ``name`` (or of every model)."""
        if name is None:
            wanted = [(n, str(v)) for n, versions in self.states().items() for v in versions]
        else:
            number = parse_version(version)
            wanted = [
                (name, str(v))
                for v, _, _ in self.versions(name)
                if number is None or (isinstance(number, int) and v == number)
            ]
            if isinstance(number, int) and not wanted:
                raise ModelNotFoundError(f"model {name!r} has no version {number}")
        return self.statistics_table.rows(wanted)

    def index(self, *, ready_only: bool = False) -> list[dict[str, Any]]:
        """The repository extension's index: every model version and its state (only the
        READY ones with ``ready_only``)."""
        rows = self._index()
        return [row for row in rows if row.get("state") == "READY"] if ready_only else rows

    def _index(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [
            {"name": name, "state": "UNAVAILABLE", "reason": why}
            for name, why in self.held_all().items()
        ]
        status = self.repository.status()
        for name, versions in model_states(status).items():
            model = status.models[name]
            problem = "" if model.config_error is None else config_problem(model)
            if not versions:
                reason = "; ".join(filter(None, ["no versions", problem]))
                out.append({"name": name, "state": "UNAVAILABLE", "reason": self.public(reason)})
            for version, (state, reason) in versions.items():
                out.append(
                    {
                        "name": name,
                        "version": str(version),
                        "state": state,
                        "reason": self.public("; ".join(filter(None, [reason, problem]))),
                    }
                )
        return out


def config_problem(model: ModelStatus) -> str:
    """What status says of a model whose ``model.toml`` is invalid now."""
    then = (
        "no version loads until it is fixed"
        if model.blocked
        else "the last good configuration stays in force"
    )
    return f"model.toml is invalid ({model.config_error}); {then}"
