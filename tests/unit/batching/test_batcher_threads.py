"""The Batcher on its callers' threads: a request runs at once on its caller's thread when a
slot is free (errors reach it, the slot is freed); a batch gathered behind a running one
runs on a waiting caller's thread (leader/follower); a server thread waits a little for
its batch and can be taken back; while nothing is queued requests run alone. Events, no
sleeps."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np
import pytest

from keepwarm.batching import Batcher, ThreadExecutor
from support.batch_models import InlineExecutor, RowModel
from support.batch_models import x_rows as _x
from support.waiting import wait_until


def test_start_runs_on_the_callers_thread_when_a_slot_is_free(executor: ThreadExecutor) -> None:
    threads: list[int] = []
    gate = threading.Event()
    inner = RowModel(gate)

    def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        threads.append(threading.get_ident())
        return inner.predict(inputs)

    batcher = Batcher(predict, name="m", executor=executor, max_delay_ms=0)
    gate.set()
    done = batcher.start(_x(1))
    assert done.done() and threads == [threading.get_ident()]  # no hand-off when idle
    gate.clear()
    busy = batcher.submit(_x(2))  # on the executor, held by the gate
    assert inner.entered.wait(10)
    pending = batcher.start(_x(3))
    assert not pending.done()  # a slot is busy: queued, not run here
    gate.set()
    assert busy.result(30)["x_echo"][0, 0] == 4 and pending.result(30)["x_echo"][0, 0] == 6
    assert threads[1] != threading.get_ident() and threads[2] != threading.get_ident()


def test_an_error_on_the_fast_path_reaches_the_caller_and_frees_the_slot(
    executor: ThreadExecutor,
) -> None:
    def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if inputs["x"][0, 0] < 0:
            raise ValueError("negative input")
        return {"y": inputs["x"]}

    batcher = Batcher(predict, name="m", executor=executor, max_delay_ms=0, slots=1)
    with pytest.raises(ValueError, match="negative input"):
        batcher.predict(_x(-1))
    with pytest.raises(ValueError, match="negative input"):
        batcher.start(_x(-1)).result(30)
    assert batcher.predict(_x(2), timeout=30)["y"][0, 0] == 2  # the slot was given back
    assert batcher.stats().failed == 2 and batcher.stats().requests == 1


def _on_threads(calls: list[Callable[[], object]]) -> list[threading.Thread]:
    threads = [threading.Thread(target=call) for call in calls]
    for thread in threads:
        thread.start()
    return threads


def test_a_batch_gathered_behind_a_running_one_runs_on_a_waiting_callers_thread() -> None:
    """Leader/follower: callers that queued behind a running batch are not handed to an
    executor thread; the first of them runs their batch on its own thread and the others
    get their results from it."""
    executor = InlineExecutor()  # holds any job: one submitted would never run
    gate = threading.Event()
    inner = RowModel(gate)
    ran_on: list[tuple[int, int]] = []  # (thread, rows) per model call

    def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ran_on.append((threading.get_ident(), len(inputs["x"])))
        return inner.predict(inputs)

    batcher = Batcher(predict, name="m", executor=executor, max_delay_ms=0, slots=1, crowd=0)
    callers: dict[int, int] = {}  # value -> the caller's thread
    results: dict[int, dict[str, np.ndarray]] = {}

    def call(value: int) -> None:
        callers[value] = threading.get_ident()
        results[value] = batcher.predict(_x(value), timeout=30)

    threads = _on_threads([lambda: call(0)])
    assert inner.entered.wait(10)  # value 0 runs on its caller's thread, held
    threads += _on_threads([lambda: call(1), lambda: call(2)])
    assert wait_until(lambda: batcher.queued == 2)
    gate.set()
    for thread in threads:
        thread.join(30)
    assert executor.jobs == []
    assert [rows for _, rows in ran_on] == [1, 2]
    assert ran_on[0][0] == callers[0] and ran_on[1][0] in (callers[1], callers[2])
    for value in (0, 1, 2):
        assert results[value]["x_echo"].tolist() == [[2.0 * value] * 3]


def test_a_server_thread_waits_for_its_batch_and_can_be_taken_back() -> None:
    """``start`` from a server's worker thread: queued behind a running batch, it waits
    (briefly) and leads its batch when the slot frees, returning a done future; a caller
    that goes away meanwhile (``bind``'s future cancelled) ends the wait, not run."""
    executor = InlineExecutor()  # holds any job: one submitted would never run
    gate = threading.Event()
    model = RowModel(gate)
    ran_on: list[int] = []

    def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ran_on.append(threading.get_ident())
        return model.predict(inputs)

    batcher = Batcher(
        predict, name="m", executor=executor, max_delay_ms=0, slots=1, follow_seconds=60
    )
    first: list[Future[dict[str, np.ndarray]]] = []
    holder = _on_threads([lambda: first.append(batcher.start(_x(0)))])
    assert model.entered.wait(10)  # runs on the holder's thread, held
    bound: list[Future[dict[str, np.ndarray]]] = []

    def bind(future: Future[dict[str, np.ndarray]]) -> bool:
        bound.append(future)
        return True

    gone: list[Future[dict[str, np.ndarray]]] = []
    leaving = _on_threads([lambda: gone.append(batcher.start(_x(7), bind=bind))])
    assert wait_until(lambda: bound)
    assert bound[0].cancel()  # the caller went away while its thread waited
    leaving[0].join(30)
    assert gone[0].cancelled()
    assert batcher.start(_x(9), bind=lambda _: False).cancelled()  # gone before it waited
    done: list[Future[dict[str, np.ndarray]]] = []
    follower: list[int] = []

    def follow() -> None:
        follower.append(threading.get_ident())
        done.append(batcher.start(_x(5)))

    stays = _on_threads([follow])
    assert wait_until(lambda: batcher.queued >= 1)
    gate.set()
    for thread in holder + stays:
        thread.join(30)
    assert first[0].result()["x_echo"][0, 0] == 0
    assert done[0].done() and done[0].result()["x_echo"][0, 0] == 10
    assert executor.jobs == [] and ran_on[1] == follower[0]  # it led its own batch
    assert model.calls == [1, 1]  # 7 and 9 never ran
    assert batcher.stats().cancelled == 2


def test_while_nothing_is_queued_requests_run_alone_then_batches_form_on_the_slots() -> None:
    """``alone`` requests run at once, each alone on its caller's thread, while nothing
    is queued (as without batching); past them requests queue, and their batch runs on
    the one batch slot once the runs end (the run past the slots gives its slot back)."""
    executor = InlineExecutor()  # holds any job: one submitted would never run
    gate = threading.Event()
    model = RowModel(gate)
    began: list[int] = []

    def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        began.append(len(inputs["x"]))
        return model.predict(inputs)

    batcher = Batcher(
        predict, name="m", executor=executor, max_delay_ms=0, slots=1, alone=2, crowd=0
    )
    results: dict[int, dict[str, np.ndarray]] = {}

    def call(value: int) -> Callable[[], None]:
        return lambda: results.__setitem__(value, batcher.predict(_x(value), timeout=30))

    threads = _on_threads([call(0), call(1)])
    assert wait_until(lambda: len(began) == 2)  # both run at once, alone
    threads += _on_threads([call(2), call(3)])
    assert wait_until(lambda: batcher.queued == 2)  # past ``alone``: queued
    gate.set()
    for thread in threads:
        thread.join(30)
    assert sorted(model.calls) == [1, 1, 2] and executor.jobs == []
    for value in range(4):
        assert results[value]["x_echo"][0, 0] == 2 * value
