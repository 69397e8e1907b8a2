"""The repository's request side on real (Python-runtime) models: waiting for a version
that is loading, awaitable leases and their cancellation, and a root that cannot be
listed. Synchronised with the probes' gate and events; every wait is bounded."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from keepwarm.core.ids import ModelId
from keepwarm.core.states import State
from keepwarm.errors import DeadlineExceededError, ModelNotFoundError, UnavailableError
from keepwarm.repository import Repository
from support.repo_builders import Probe, place_python
from support.waiting import until_async

WAIT_S = 30.0
X = {"x": np.ones((2, 4), dtype=np.float32)}


@pytest.fixture
def loading(root: Path, probe: type[Probe]) -> Iterator[Repository]:
    """A repository whose model ``slow`` (version 1) is loading until ``Probe.gate`` opens."""
    place_python(root / "slow", 1, "HangingLoad")
    with Repository(root, poll_seconds=3600, watch=False, allow_unsafe=True) as repo:
        assert probe.entered.wait(WAIT_S)
        assert repo.manager.state(ModelId("slow", 1)) is State.LOADING
        yield repo
        probe.gate.set()


def test_lease_with_a_timeout_waits_while_the_version_loads(
    loading: Repository, probe: type[Probe]
) -> None:
    started = time.monotonic()
    with (
        pytest.raises(DeadlineExceededError, match="not ready within"),
        loading.lease("slow", timeout=0.3),
    ):
        pass
    assert time.monotonic() - started >= 0.3  # it waited: no UnavailableError at once
    with pytest.raises(UnavailableError, match=r"not ready|LOADING"), loading.lease("slow"):
        pass  # no timeout: no waiting

    async def waiting() -> int:
        task = asyncio.create_task(loading.acquire_async("slow", timeout=WAIT_S))
        await until_async(lambda: loading.manager.awaiting() == 1)
        assert not task.done()
        probe.gate.set()
        lease = await task
        with lease as model:
            assert model.predict(X)["version"].tolist() == [1.0, 1.0]
            return int(model.version)

    assert asyncio.run(waiting()) == 1
    with loading.lease("slow", timeout=WAIT_S) as model:
        assert model.version == 1


def test_a_cancelled_acquire_async_leaves_no_waiter_and_no_lease(loading: Repository) -> None:
    async def cancelled() -> None:
        task = asyncio.create_task(loading.acquire_async("slow", 1, timeout=WAIT_S))
        await until_async(lambda: loading.manager.awaiting() == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancelled())
    assert loading.manager.awaiting() == 0
    entry = loading.manager.entry(ModelId("slow", 1))
    assert entry is not None and entry.leases == 0 and entry.waiters == 0
    assert loading.try_acquire("slow") is None  # still loading: would wait
    with pytest.raises(ModelNotFoundError):
        loading.try_acquire("nope")


def test_a_root_that_cannot_be_listed_keeps_the_last_listing_in_force(
    root: Path, probe: type[Probe]
) -> None:
    place_python(root / "echo", 1, "EchoVersion")
    moved = root.with_name("moved")
    with Repository(root, poll_seconds=3600, watch=False, allow_unsafe=True) as repo:
        assert repo.wait_ready("echo", timeout=WAIT_S) == 1
        root.rename(moved)  # unmounted, deleted, renamed: the root cannot be listed
        with pytest.raises(UnavailableError, match="cannot be listed"):
            repo.refresh()
        assert repo.listing_error is not None and "cannot be listed" in repo.listing_error
        assert repo.manager.state(ModelId("echo", 1)) is State.READY
        with repo.lease("echo") as model:  # serving on
            assert model.version == 1
            assert model.predict(X)["version"].tolist() == [1.0, 1.0]
        status = repo.status()
        assert status.listing_error == repo.listing_error
        assert status.models["echo"].versions[1].state is State.READY
        moved.rename(root)
        repo.refresh()
        assert repo.listing_error is None
        with repo.lease("echo") as model:
            assert model.version == 1
        # Only a listing that succeeds and lacks the model removes it.
        (root / "echo").rename(moved)
        repo.refresh()
        with pytest.raises(ModelNotFoundError), repo.lease("echo"):
            pass


def test_requests_for_a_ready_version_never_wait_behind_reconciliation(
    root: Path, probe: type[Probe]
) -> None:
    place_python(root / "echo", 1, "EchoVersion")
    with Repository(root, poll_seconds=3600, watch=False, allow_unsafe=True) as repo:
        assert repo.wait_ready("echo", timeout=WAIT_S) == 1
        held, done = threading.Event(), threading.Event()

        def reconciling() -> None:  # a long reconciliation holds the repository's lock
            with repo._catalog.lock:  # (private: the test stands in for a slow scan)
                held.set()
                assert done.wait(WAIT_S)

        thread = threading.Thread(target=reconciling)
        thread.start()
        try:
            assert held.wait(WAIT_S)
            for _ in range(100):  # the serving map: no lock, so no waiting
                lease = repo.try_acquire("echo")
                assert lease is not None
                with lease as model:
                    assert model.version == 1
        finally:
            done.set()
            thread.join(WAIT_S)
