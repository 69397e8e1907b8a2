"""The version state machine: every transition is legal or refused."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    NEW = "NEW"
    LOADING = "LOADING"
    WARMING = "WARMING"
    READY = "READY"
    DRAINING = "DRAINING"
    UNLOADED = "UNLOADED"
    FAILED = "FAILED"


TRANSITIONS: dict[State, frozenset[State]] = {
    State.NEW: frozenset({State.LOADING}),
    State.LOADING: frozenset({State.WARMING, State.FAILED}),
    State.WARMING: frozenset({State.READY, State.FAILED}),
    # READY -> FAILED: the loaded model reported itself broken (say, its worker processes
    # crash-looped); it is retried after the backoff like a failed load.
    State.READY: frozenset({State.DRAINING, State.FAILED}),
    State.DRAINING: frozenset({State.UNLOADED}),
    State.FAILED: frozenset({State.LOADING}),
    State.UNLOADED: frozenset({State.LOADING}),
}

#: States in which a version holds (or is about to hold) memory.
RESIDENT = frozenset({State.LOADING, State.WARMING, State.READY, State.DRAINING})


class IllegalTransition(RuntimeError):
    """A bug: the manager tried a transition the table does not allow."""


def check(current: State, target: State) -> State:
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(f"{current.value} -> {target.value} is not a legal transition")
    return target
