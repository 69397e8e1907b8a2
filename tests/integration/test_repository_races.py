"""Repository races: 32 threads loading and unloading one model never load it twice at
once and every load and unload goes through its states in order; a lease after close says
the repository is shutting down."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

import keepwarm
from keepwarm.core.events import Event
from keepwarm.core.ids import ModelId
from keepwarm.core.states import State
from keepwarm.repository import Repository
from support.repo_builders import (
    Probe,
    place,
    place_python,
)

WAIT_S = 30.0


def test_32_threads_x_200_loads_and_unloads_never_load_twice_at_once(
    root: Path, probe: type[Probe]
) -> None:
    place_python(root / "m", 1, "EchoVersion")
    key = ModelId("m", 1)
    seen: list[Event] = []
    delivered = threading.Condition()

    def record(event: Event) -> None:
        if event.kind == "state" and event.key == key:
            with delivered:
                seen.append(event)
                delivered.notify_all()

    repo = Repository(root, on_demand=True, poll_seconds=0.05, allow_unsafe=True)
    repo.subscribe(record)
    failures: list[BaseException] = []
    barrier = threading.Barrier(32)
    x = {"x": np.ones((1, 4), dtype=np.float32)}

    def worker(index: int) -> None:
        barrier.wait()
        for i in range(200):
            try:
                if (index + i) % 2:
                    with repo.lease("m", timeout=WAIT_S) as model:
                        assert model.predict(x)["version"].tolist() == [1.0]
                else:
                    repo.manager.unload(key, "unloaded by a test thread")
            except BaseException as exc:
                failures.append(exc)

    with repo:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(2 * WAIT_S)
        assert not any(t.is_alive() for t in threads), "deadlock"
        assert failures == []
        loads = repo.manager.counters["loads"]
        assert probe.max_active == 1  # never two loads of the version at once
        assert probe.count("EchoVersion") == loads > 1
        entry = repo.manager.entry(key)
        assert entry is not None and entry.leases == 0 and entry.waiters == 0
        assert entry.state in (State.READY, State.UNLOADED) and not entry.reserving
        with delivered:  # events arrive on their own thread: wait for the last one
            assert delivered.wait_for(
                lambda: (
                    seen
                    and seen[-1].state is entry.state
                    and sum(e.state is State.LOADING for e in seen) == loads
                ),
                WAIT_S,
            )
            states = [e.state for e in seen]
        # Every load went LOADING -> WARMING -> READY, every unload DRAINING -> UNLOADED.
        assert states.count(State.READY) == states.count(State.WARMING) == loads
        assert states.count(State.DRAINING) == states.count(State.UNLOADED)
        assert State.FAILED not in states
        with repo.lease("m") as model:
            assert model.predict(x)["version"].tolist() == [1.0]


def test_lease_after_close_says_the_repository_is_shutting_down(
    root: Path, echo_models: dict[int, Path]
) -> None:
    place(root / "echo", 1, echo_models[1])
    repo = Repository(root, on_demand=True, poll_seconds=0.05)
    with repo:
        pass
    with pytest.raises(keepwarm.UnavailableError, match="shutting down"), repo.lease("echo"):
        pass
