"""The request side without a lock: a lease takes its count, then checks READY; an unload
publishes DRAINING, then reads the count. Each interleaving is forced with events."""

from __future__ import annotations

import asyncio
import threading

import pytest
from fakes import FakeModel, FakeSpec

from keepwarm.core.lease import Lease
from keepwarm.core.manager import Manager
from keepwarm.core.states import State
from keepwarm.errors import DeadlineExceededError
from support.waiting import until_async

WAIT_S = 10.0


class GatedHolders(list[None]):
    """A lease count whose next ``append`` stops, count taken, until ``go`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.taken = threading.Event()
        self.go = threading.Event()

    def append(self, item: None) -> None:
        super().append(item)
        if not self.taken.is_set():
            self.taken.set()
            assert self.go.wait(WAIT_S), "the test never let the lease go on"


def ready_manager() -> tuple[Manager, FakeSpec]:
    manager = Manager()
    spec = FakeSpec("a")
    manager.acquire("a", spec).release()
    assert manager.state("a") is State.READY
    return manager, spec


def test_a_lease_counted_before_drain_is_published_gives_its_count_back() -> None:
    manager, spec = ready_manager()
    entry = manager.entry("a")
    assert entry is not None
    holders = entry.holders = GatedHolders()
    got: list[Lease | None] = []
    thread = threading.Thread(target=lambda: got.append(manager.try_acquire("a")))
    thread.start()
    assert holders.taken.wait(WAIT_S)  # the count is taken; READY not checked yet
    assert manager.unload("a", "replaced")
    # DRAINING is published and the count is 1: the version must not unload yet.
    assert manager.state("a") is State.DRAINING
    assert not spec.made[0].closed.is_set()
    holders.go.set()  # the lease now sees DRAINING: gives the count back, which unloads
    thread.join(WAIT_S)
    assert got == [None]
    assert manager.state("a") is State.UNLOADED and not entry.holders
    assert spec.made[0].closed.wait(WAIT_S)
    manager.close()


def test_a_lease_checked_ready_before_the_drain_keeps_the_version_until_released() -> None:
    manager, spec = ready_manager()
    lease = manager.try_acquire("a")
    assert lease is not None
    assert manager.unload("a", "replaced")
    assert manager.state("a") is State.DRAINING  # the count is 1: not unloaded
    assert isinstance(lease.model, FakeModel) and not lease.model.closed.is_set()
    assert manager.try_acquire("a") is None  # no new lease on a draining version
    lease.release()
    lease.release()  # idempotent
    assert manager.state("a") is State.UNLOADED and manager.entry("a").leases == 0  # type: ignore[union-attr]
    assert spec.made[0].closed.wait(WAIT_S)
    manager.close()


def test_a_lease_counted_after_the_unload_sees_it_and_takes_nothing() -> None:
    manager, _ = ready_manager()
    entry = manager.entry("a")
    assert entry is not None
    assert manager.unload("a")
    assert manager.state("a") is State.UNLOADED
    assert manager.try_lease(entry) is None
    assert entry.leases == 0
    manager.close()


def test_warmup_note_is_the_ready_state_reason() -> None:
    class Noted(FakeSpec):
        def warmup(self, model: object) -> str | None:
            return "generated warmup skipped: height must be a multiple of 32"

    manager = Manager()
    manager.acquire("n", Noted("n")).release()
    entry = manager.entry("n")
    assert entry is not None and entry.state is State.READY
    assert entry.reason == "generated warmup skipped: height must be a multiple of 32"
    manager.close()


def test_acquire_async_waits_for_the_load_without_blocking_the_loop() -> None:
    gate = threading.Event()
    spec = FakeSpec("slow", gate=gate)
    manager = Manager()

    async def main() -> None:
        task = asyncio.create_task(manager.acquire_async("slow", spec, timeout=WAIT_S))
        await until_async(lambda: manager.awaiting() == 1 and spec.started.is_set())
        assert manager.state("slow") is State.LOADING and not task.done()
        gate.set()
        lease = await task
        assert lease.model.name == "slow"
        lease.release()

    asyncio.run(main())
    assert manager.awaiting() == 0
    manager.close()


def test_a_cancelled_acquire_async_leaves_no_lease_and_no_waiter() -> None:
    gate = threading.Event()
    spec = FakeSpec("slow", gate=gate)
    manager = Manager()

    async def main() -> None:
        task = asyncio.create_task(manager.acquire_async("slow", spec))
        await until_async(lambda: manager.awaiting() == 1 and spec.started.is_set())
        entry = manager.entry("slow")
        assert entry is not None and entry.waiters == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert manager.awaiting() == 0 and entry.waiters == 0 and entry.leases == 0

    asyncio.run(main())
    gate.set()
    assert manager.wait_state("slow", {State.READY}, WAIT_S) is State.READY
    assert manager.entry("slow").leases == 0  # type: ignore[union-attr]
    manager.close()


def test_acquire_async_deadline() -> None:
    gate = threading.Event()
    manager = Manager()

    async def main() -> None:
        with pytest.raises(DeadlineExceededError):
            await manager.acquire_async("slow", FakeSpec("slow", gate=gate), timeout=0.05)

    asyncio.run(main())
    assert manager.awaiting() == 0 and manager.entry("slow").waiters == 0  # type: ignore[union-attr]
    gate.set()
    manager.close()
