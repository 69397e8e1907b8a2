"""Manager behaviour with fake models: deterministic with events, no framework."""

from __future__ import annotations

import threading
import time

import pytest
from fakes import FakeSpec

from keepwarm.core.backoff import Backoff
from keepwarm.core.manager import Manager
from keepwarm.core.states import IllegalTransition, State, check
from keepwarm.errors import (
    ModelLoadError,
    ModelNotFoundError,
    ResourceExhaustedError,
    UnavailableError,
)
from support.waiting import WAIT_S, wait_until, waiting_for_room


def test_single_flight_many_threads_one_load() -> None:
    gate = threading.Event()
    spec = FakeSpec("a", gate=gate)
    manager = Manager()
    barrier = threading.Barrier(32)
    models: list[object] = []

    def worker() -> None:
        barrier.wait()
        with manager.lease("a", spec) as model:
            models.append(model)

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for t in threads:
        t.start()
    assert spec.started.wait(WAIT_S)
    gate.set()
    for t in threads:
        t.join(10)
    assert spec.loads == 1
    assert len(models) == 32 and len({id(m) for m in models}) == 1
    assert manager.counters["loads"] == 1


def test_load_of_one_model_does_not_block_another() -> None:
    gate = threading.Event()
    slow, fast = FakeSpec("slow", gate=gate), FakeSpec("fast")
    manager = Manager()
    waiter = threading.Thread(target=lambda: manager.acquire("slow", slow).release())
    waiter.start()
    assert slow.started.wait(WAIT_S)
    with manager.lease("fast", fast, timeout=WAIT_S) as model:  # would time out if serialised
        assert model.name == "fast"
    assert manager.state("slow") is State.LOADING
    gate.set()
    waiter.join(WAIT_S)
    assert manager.state("slow") is State.READY


def test_eviction_prefers_rarely_used_and_never_a_leased_model() -> None:
    manager = Manager(max_bytes=250)
    a, b, c = FakeSpec("a"), FakeSpec("b"), FakeSpec("c")
    for _ in range(5):
        manager.acquire("a", a).release()
    lease_b = manager.acquire("b", b)
    for _ in range(3):
        manager.acquire("b", b).release()
    # b is leased, a is popular: c must wait for room... unless a can go. a is idle -> a goes.
    manager.acquire("c", c).release()
    assert manager.state("a") is State.UNLOADED
    assert manager.state("b") is State.READY
    lease_b.release()
    # Now b (4 uses) vs c (1 use): loading a again evicts c, the rarer one.
    manager.acquire("a", a).release()
    assert manager.state("c") is State.UNLOADED and manager.state("b") is State.READY
    assert manager.counters["evictions"] == 2


def test_load_waits_for_a_lease_to_end_then_evicts() -> None:
    manager = Manager(max_models=1, budget_timeout=10)
    a, b = FakeSpec("a"), FakeSpec("b")
    lease = manager.acquire("a", a)
    got: list[str] = []
    t = threading.Thread(target=lambda: got.append(manager.acquire("b", b).model.name))
    t.start()
    assert wait_until(lambda: waiting_for_room(manager, "b", ready="a"))
    assert manager.state("a") is State.READY  # in use: not unloaded under its user
    lease.release()
    t.join(WAIT_S)
    assert got == ["b"] and manager.state("a") is State.UNLOADED


def test_no_room_before_deadline_raises_resource_exhausted() -> None:
    manager = Manager(max_models=1, budget_timeout=0.2)
    lease = manager.acquire("a", FakeSpec("a"))
    with pytest.raises(ResourceExhaustedError, match="in use or pinned: a"):
        manager.acquire("b", FakeSpec("b"))
    lease.release()
    manager.acquire("b", FakeSpec("b")).release()  # the manager is still usable


def test_model_larger_than_budget_fails_at_once() -> None:
    manager = Manager(max_bytes=50)
    with pytest.raises(ResourceExhaustedError, match="more than the whole budget"):
        manager.acquire("big", FakeSpec("big", nbytes=100))


def test_failed_load_raises_typed_error_and_is_not_retried_within_its_backoff() -> None:
    spec = FakeSpec("bad", fail=ModelNotFoundError("no such model"))
    # A backoff no stall of a loaded machine outlasts: every call below is within it.
    manager = Manager(backoff=Backoff(initial=600, jitter=0))
    for _ in range(5):
        with pytest.raises(ModelNotFoundError, match="no such model"):
            manager.acquire("bad", spec)
    assert spec.loads == 1  # not retried on every call
    assert manager.state("bad") is State.FAILED
    entry = manager.entry("bad")
    assert entry is not None and not entry.due()


def test_failed_load_is_retried_once_its_backoff_passed() -> None:
    spec = FakeSpec("bad", fail=ModelNotFoundError("no such model"))
    manager = Manager(backoff=Backoff(initial=0.3, jitter=0))
    with pytest.raises(ModelNotFoundError, match="no such model"):
        manager.acquire("bad", spec)
    entry = manager.entry("bad")
    assert entry is not None
    assert wait_until(entry.due, WAIT_S)
    spec.fail = None
    with manager.lease("bad", spec) as model:
        assert model.name == "bad"
    assert spec.loads == 2


def test_unexpected_exception_is_wrapped_with_cause() -> None:
    manager = Manager()
    with pytest.raises(ModelLoadError, match="RuntimeError: boom") as info:
        manager.acquire("x", FakeSpec("x", fail=RuntimeError("boom")))
    assert isinstance(info.value.__cause__, RuntimeError)


def test_warmup_failure_fails_the_version_and_closes_the_model() -> None:
    manager = Manager()
    spec = FakeSpec("w", warm_fail=ValueError("cannot warm"))
    with pytest.raises(ModelLoadError, match="warm"):
        manager.acquire("w", spec)
    assert manager.state("w") is State.FAILED
    assert spec.made and spec.made[0].closed.wait(WAIT_S)


def test_timed_out_load_is_not_loaded_again_until_it_returns() -> None:
    gate = threading.Event()
    spec = FakeSpec("hang", gate=gate)
    manager = Manager(load_timeout=0.2, backoff=Backoff(initial=0.01, jitter=0))
    with pytest.raises(ModelLoadError, match="timeout"):
        manager.acquire("hang", spec)
    entry = manager.entry("hang")
    assert entry is not None and entry.stuck
    # Past the backoff: only the stuck load holds the retry back.
    assert wait_until(lambda: time.monotonic() >= entry.retry_at, WAIT_S)
    with pytest.raises(ModelLoadError, match="timeout"):
        manager.acquire("hang", spec)
    assert spec.loads == 1
    gate.set()  # the stuck load returns; its model is discarded
    assert wait_until(lambda: not entry.stuck, WAIT_S)
    with manager.lease("hang", spec, timeout=WAIT_S) as model:
        assert model.name == "hang"
    assert spec.loads == 2


def test_unload_drains_leases_first() -> None:
    manager = Manager()
    spec = FakeSpec("d")
    lease = manager.acquire("d", spec)
    model = lease.model
    assert manager.unload("d")
    assert manager.state("d") is State.DRAINING
    with pytest.raises(UnavailableError, match="DRAINING"):
        manager.acquire("d")  # eager mode: no new leases on a draining version
    assert not model.closed.is_set()
    lease.release()
    assert manager.state("d") is State.UNLOADED
    assert model.closed.wait(WAIT_S)


def test_illegal_transition_is_refused() -> None:
    with pytest.raises(IllegalTransition):
        check(State.READY, State.LOADING)
    assert check(State.FAILED, State.LOADING) is State.LOADING


def _acquire_release(manager: Manager, key: str, spec: FakeSpec) -> None:
    manager.acquire(key, spec, timeout=10).release()


def test_a_just_loaded_model_is_not_evicted_before_its_waiting_request_gets_it() -> None:
    for _ in range(20):
        gate = threading.Event()
        a, b = FakeSpec("a", gate=gate), FakeSpec("b")
        manager = Manager(max_models=1, budget_timeout=10)
        ta = threading.Thread(target=_acquire_release, args=(manager, "a", a))
        ta.start()
        assert a.started.wait(WAIT_S)
        tb = threading.Thread(target=_acquire_release, args=(manager, "b", b))
        tb.start()
        gate.set()
        ta.join(10)
        tb.join(10)
        assert a.loads == 1 and b.loads == 1


def test_patient_eviction_keeps_a_popular_model_while_rare_loads_are_in_flight() -> None:
    manager = Manager(max_models=2, budget_timeout=10)
    popular, rare1, rare2 = FakeSpec("p"), FakeSpec("r1", gate=threading.Event()), FakeSpec("r2")
    for _ in range(10):
        manager.acquire("p", popular).release()
    t1 = threading.Thread(target=lambda: manager.acquire("r1", rare1).release())
    t1.start()
    assert rare1.started.wait(WAIT_S)
    t2 = threading.Thread(target=lambda: manager.acquire("r2", rare2).release())
    t2.start()
    # r2 waits for r1 (in flight, rarely used) rather than evict the popular model.
    assert wait_until(lambda: waiting_for_room(manager, "r2", ready="p"))
    assert rare1.gate is not None
    rare1.gate.set()
    t1.join(WAIT_S)
    t2.join(WAIT_S)
    assert manager.state("p") is State.READY and manager.state("r1") is State.UNLOADED


def test_close_during_a_load_discards_it_and_stops_every_thread() -> None:
    gate = threading.Event()
    spec = FakeSpec("late", gate=gate)
    manager = Manager()
    manager.events.subscribe(lambda event: None)  # starts the dispatcher thread
    dispatcher = manager.events._thread
    assert dispatcher is not None and dispatcher.is_alive()
    manager.ensure("late", spec)
    assert spec.started.wait(WAIT_S)
    closer = threading.Thread(target=manager.close, kwargs={"drain_timeout": 10})
    closer.start()
    gate.set()  # the load returns after close() began
    closer.join(WAIT_S)
    assert not closer.is_alive()
    assert manager.state("late") is State.FAILED
    assert spec.made and spec.made[0].closed.wait(WAIT_S)  # its model was closed, not leaked
    with pytest.raises(UnavailableError, match="shutting down"):
        manager.acquire("other", FakeSpec("other"))
    assert not dispatcher.is_alive()


def test_a_new_spec_replaces_a_failed_one_and_retries_at_once() -> None:
    manager = Manager(backoff=Backoff(initial=60, jitter=0))
    with pytest.raises(ModelLoadError, match="bad config"):
        manager.acquire("m", FakeSpec("m", fail=ModelLoadError("bad config")))
    fixed = FakeSpec("m")
    with manager.lease("m", fixed, timeout=WAIT_S) as model:  # no 60 s backoff: the spec changed
        assert model.name == "m"
    assert fixed.loads == 1


def test_sizing_runs_without_the_lock() -> None:
    manager = Manager()
    entered, release = threading.Event(), threading.Event()

    class SlowToSize(FakeSpec):
        def estimate_nbytes(self) -> int:
            entered.set()
            assert release.wait(10)
            return self.nbytes

    manager.acquire("ready", FakeSpec("ready")).release()
    t = threading.Thread(target=lambda: manager.acquire("slow", SlowToSize("slow")).release())
    t.start()
    assert entered.wait(WAIT_S)
    with manager.lease("ready", timeout=WAIT_S) as model:  # not blocked behind the directory walk
        assert model.name == "ready"
    release.set()
    t.join(WAIT_S)
    assert manager.state("slow") is State.READY
