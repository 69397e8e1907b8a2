"""The Batcher: dispatch, gathering, overload, deadlines, cancellation; threads and asyncio.

Synchronised with events (a model whose calls are held by a gate), never with sleeps.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future

import numpy as np
import pytest

from keepwarm.batching import Batcher, BatchSplitError, ThreadExecutor
from keepwarm.errors import DeadlineExceededError, UnavailableError
from support.batch_models import InlineExecutor, RowModel, run_clients
from support.waiting import wait_until


def _x(value: float, rows: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.full((rows, 3), value, np.float32)}


@pytest.fixture
def executor() -> Iterator[ThreadExecutor]:
    pool = ThreadExecutor(1)
    yield pool
    pool.close()


def _held(executor: ThreadExecutor, **kwargs: object) -> tuple[Batcher, RowModel, threading.Event]:
    gate = threading.Event()
    model = RowModel(gate)
    batcher = Batcher(model.predict, name="m", executor=executor, **kwargs)  # type: ignore[arg-type]
    return batcher, model, gate


def test_an_idle_model_runs_a_request_at_once(executor: ThreadExecutor) -> None:
    model = RowModel()
    batcher = Batcher(model.predict, name="m", executor=executor, max_delay_ms=60_000)
    for value in range(3):  # the delay is a minute: waiting would time out
        out = batcher.predict(_x(value), timeout=30)
        assert out["x_echo"].tolist() == [[2 * value] * 3]
    assert model.calls == [1, 1, 1]
    assert batcher.stats().waits == 0


def test_arrivals_gather_while_a_batch_runs_first_come_first_served(
    executor: ThreadExecutor,
) -> None:
    batcher, model, gate = _held(executor, max_batch_size=4, max_delay_ms=0)
    first = batcher.submit(_x(0))
    assert model.entered.wait(10)
    # Rows 2 + 1 + 2: the third request would make 5 rows, so it opens the next batch.
    later = [batcher.submit(_x(1, 2)), batcher.submit(_x(2)), batcher.submit(_x(3, 2))]
    later.append(batcher.submit(_x(4)))
    gate.set()
    results = [f.result(30) for f in [first, *later]]
    # [0], then [1 1 2] padded to 4; request 4 does not jump ahead of 3: [3 3 4] padded.
    assert model.calls == [1, 4, 4]
    for value, result in enumerate(results):
        assert set(result["x_echo"].ravel().tolist()) == {2.0 * value}
    stats = batcher.stats()
    assert stats.batches == 3 and stats.requests == 5 and stats.rows == 7
    assert stats.padded_rows == 9 and stats.batch_sizes == {1: 1, 4: 2}


def test_a_request_past_max_batch_size_runs_alone_unpadded(executor: ThreadExecutor) -> None:
    batcher, model, gate = _held(executor, max_batch_size=2, max_delay_ms=0)
    gate.set()
    out = batcher.predict(_x(5, 7), timeout=30)
    assert out["x_echo"].shape == (7, 3) and model.calls == [7]


def test_requests_run_at_once_are_counted_and_timed_at_their_bucket_only(
    executor: ThreadExecutor,
) -> None:
    """An idle model runs each request on its caller's thread: counted as a batch at its
    bucket, never queued, and timed into the latency table, whose sizes are the buckets
    (they label a metric): a request past ``max_batch_size`` adds no size of its own."""
    model = RowModel()
    batcher = Batcher(model.predict, name="m", executor=executor, max_batch_size=4)
    for rows in (7, 3, 2):  # past the maximum; padded to 4; at its bucket
        assert batcher.predict(_x(rows, rows), timeout=30)["x_echo"].shape == (rows, 3)
    assert model.calls == [7, 4, 2]
    assert sorted(batcher.latency.snapshot()) == [2, 4]
    stats = batcher.stats()
    assert (stats.batches, stats.requests, stats.rows, stats.padded_rows) == (3, 3, 12, 13)
    assert stats.batch_sizes == {7: 1, 4: 1, 2: 1}
    assert stats.queue_seconds_sum == stats.queue_seconds_max == 0 and stats.failed == 0


def test_other_shapes_are_not_mixed_in(executor: ThreadExecutor) -> None:
    batcher, model, gate = _held(executor, max_batch_size=8, max_delay_ms=0)
    first = batcher.submit(_x(0))
    assert model.entered.wait(10)
    a = batcher.submit(_x(1))
    b = batcher.submit({"x": np.ones((1, 4), np.float32)})  # another width
    c = batcher.submit({"x": np.ones((1, 3), np.float64)})  # another dtype
    d = batcher.submit(_x(2))
    gate.set()
    for f in (first, a, b, c, d):
        f.result(30)
    assert model.calls == [1, 2, 1, 1]  # a and d together (a is first), then b, then c
    assert b.result()["x_echo"].shape == (1, 4) and c.result()["x_echo"].dtype == np.float64


def test_past_the_queue_bound_requests_are_refused_at_once(executor: ThreadExecutor) -> None:
    batcher, model, gate = _held(executor, max_queue=3, max_delay_ms=0)
    running = batcher.submit(_x(0))
    assert model.entered.wait(10)
    queued = [batcher.submit(_x(i)) for i in range(1, 4)]
    with pytest.raises(UnavailableError, match=r"model 'm' is overloaded: 3 requests"):
        batcher.submit(_x(9))
    assert batcher.stats().rejected == 1
    # A cancelled request frees its place.
    assert queued[0].cancel()
    extra = batcher.submit(_x(8))
    gate.set()
    for f in [running, *queued[1:], extra]:
        f.result(30)
    assert model.calls == [1, 4]  # 2, 3 and 8, padded to 4 rows
    assert np.full(3, 1, np.float32).tobytes() not in model.seen


def test_an_expired_request_is_not_run(executor: ThreadExecutor) -> None:
    now = [100.0]
    gate = threading.Event()
    model = RowModel(gate)
    batcher = Batcher(
        model.predict, name="m", executor=executor, max_delay_ms=0, clock=lambda: now[0]
    )
    running = batcher.submit(_x(0))
    assert model.entered.wait(10)
    late = batcher.submit(_x(7), deadline=105.0)
    kept = batcher.submit(_x(8), deadline=200.0)
    now[0] = 110.0  # the deadline of `late` passes while it is queued
    gate.set()
    running.result(30)
    with pytest.raises(DeadlineExceededError, match="passed while it was queued"):
        late.result(30)
    assert kept.result(30)["x_echo"][0, 0] == 16
    assert model.calls == [1, 1]
    assert np.full(3, 7, np.float32).tobytes() not in model.seen  # counted by the model
    assert batcher.stats().expired == 1


def test_a_cancelled_request_leaves_the_queue_and_a_running_one_finishes(
    executor: ThreadExecutor,
) -> None:
    batcher, model, gate = _held(executor, max_delay_ms=0)
    running = batcher.submit(_x(0))
    assert model.entered.wait(10)
    assert not running.cancel()  # its batch runs: it is not interrupted
    gone = batcher.submit(_x(7))
    assert gone.cancel()
    gate.set()
    assert running.result(30)["x_echo"][0, 0] == 0
    assert model.calls == [1]
    assert np.full(3, 7, np.float32).tobytes() not in model.seen
    batcher.predict(_x(1), timeout=30)  # the cancelled one is purged on the way
    assert batcher.stats().cancelled == 1 and batcher.queued == 0


def test_a_thread_caller_past_its_timeout_gets_deadline_exceeded_and_is_not_run(
    executor: ThreadExecutor,
) -> None:
    batcher, model, gate = _held(executor, max_delay_ms=0, crowd=0)  # past the slot: queued
    running = batcher.submit(_x(0))
    assert model.entered.wait(10)
    with pytest.raises(DeadlineExceededError, match="deadline"):
        batcher.predict(_x(7), timeout=0.01)
    gate.set()
    running.result(30)
    batcher.predict(_x(1), timeout=30)
    assert np.full(3, 7, np.float32).tobytes() not in model.seen
    assert model.calls == [1, 1]


def test_async_callers_cancelled_or_expired_are_not_run(executor: ThreadExecutor) -> None:
    batcher, model, gate = _held(executor, max_delay_ms=0)

    async def scenario() -> None:
        running = asyncio.ensure_future(batcher.predict_async(_x(0)))
        while not model.entered.is_set():  # bounded by the test's timeout
            await asyncio.sleep(0)
        gone = asyncio.ensure_future(batcher.predict_async(_x(7)))
        await asyncio.sleep(0)  # queued
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        with pytest.raises(DeadlineExceededError):
            await batcher.predict_async(_x(6), timeout=0.01)
        gate.set()
        assert (await running)["x_echo"][0, 0] == 0
        assert (await batcher.predict_async(_x(1), timeout=30))["x_echo"][0, 0] == 2

    asyncio.run(scenario())
    for value in (6, 7):
        assert np.full(3, value, np.float32).tobytes() not in model.seen
    assert model.calls == [1, 1]


def test_a_failing_batch_fails_each_of_its_requests_only(executor: ThreadExecutor) -> None:
    calls = []
    gate = threading.Event()
    entered = threading.Event()

    def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        entered.set()
        assert gate.wait(10)
        calls.append(len(inputs["x"]))
        if len(calls) == 2:
            return {"y": inputs["x"][:1]}  # one row for a batch of two
        return {"y": inputs["x"]}

    batcher = Batcher(predict, name="broken", executor=executor, max_delay_ms=0)
    first = batcher.submit(_x(0))
    assert entered.wait(10)
    pair = [batcher.submit(_x(1)), batcher.submit(_x(2))]
    gate.set()
    assert first.result(30)["y"].shape == (1, 3)
    for f in pair:
        with pytest.raises(BatchSplitError, match="model 'broken' returned output 'y'"):
            f.result(30)
    assert batcher.predict(_x(3), timeout=30)["y"][0, 0] == 3  # it keeps serving
    assert batcher.stats().failed == 2


def test_32_threads_at_once_get_their_own_results() -> None:
    executor = ThreadExecutor(2)
    model = RowModel()
    batcher = Batcher(model.predict, name="m", executor=executor, max_batch_size=8)
    results: dict[int, dict[str, np.ndarray]] = {}

    def client(index: int) -> None:
        for round_ in range(5):
            rows = 1 + (index + round_) % 3
            value = index * 10 + round_
            out = batcher.predict(_x(value, rows), timeout=60)
            assert out["x_echo"].shape == (rows, 3)
            assert set(out["x_echo"].ravel().tolist()) == {2.0 * value}
            assert out["x_sum"].tolist() == [3.0 * value] * rows
            results[value] = out

    try:
        run_clients(32, client)
    finally:
        executor.close()
    assert len(results) == 160
    assert max(model.calls) <= 8


def test_closing_refuses_new_requests_and_runs_the_queued(executor: ThreadExecutor) -> None:
    batcher, model, gate = _held(executor, max_delay_ms=0)
    running = batcher.submit(_x(0))
    assert model.entered.wait(10)
    queued = batcher.submit(_x(1))
    batcher.close()
    with pytest.raises(UnavailableError, match="unloading"):
        batcher.submit(_x(2))
    gate.set()
    assert running.result(30) and queued.result(30)["x_echo"][0, 0] == 2


def test_waiting_pays_only_under_load_and_never_past_max_delay(executor: ThreadExecutor) -> None:
    batcher, model, gate = _held(executor, max_batch_size=64, max_delay_ms=10_000)
    # A model whose batches cost 10 s up to 32 rows and 10.1 s at 64: a queue of 20 rows,
    # arriving far faster than 2 rows/s, is worth holding for 64.
    for bucket in (1, 2, 4, 8, 16, 32):
        batcher.latency.record(bucket, 10.0)
    batcher.latency.record(64, 10.1)
    first = batcher.submit(_x(0))
    assert model.entered.wait(10)
    burst = [batcher.submit(_x(i)) for i in range(1, 21)]
    gate.set()
    for value, f in enumerate([first, *burst]):
        assert f.result(60)["x_echo"][0, 0] == 2 * value
    assert batcher.stats().waits >= 1  # the 20 rows were held for more
    assert model.calls[0] == 1 and sum(model.calls) >= 21


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


def test_a_batch_stops_at_the_size_that_serves_a_row_for_least(executor: ThreadExecutor) -> None:
    batcher, model, gate = _held(executor, max_batch_size=8, max_delay_ms=0)
    for bucket, seconds in {1: 0.01, 2: 0.012, 4: 0.014, 8: 0.2}.items():
        batcher.latency.record(bucket, seconds)  # 8 rows cost far more than twice 4
    first = batcher.submit(_x(0))
    assert model.entered.wait(10)
    later = [batcher.submit(_x(i)) for i in range(1, 9)]
    gate.set()
    for value, f in enumerate([first, *later]):
        assert f.result(30)["x_echo"][0, 0] == 2 * value
    assert model.calls == [1, 4, 4]


def test_holding_that_gains_nothing_stops_for_a_while(executor: ThreadExecutor) -> None:
    """Closed-loop callers are all queued already: a held batch gains no rows, so the
    batcher stops holding (it would only add the delay to every batch)."""
    batcher, model, gate = _held(executor, max_batch_size=4, max_delay_ms=50, slots=1)
    for bucket, seconds in {1: 1.0, 2: 1.0, 4: 1.001}.items():
        batcher.latency.record(bucket, seconds)  # 4 rows cost as little as 2: worth holding

    def round_() -> None:
        gate.clear()
        model.entered.clear()
        first = batcher.submit(_x(0))
        assert model.entered.wait(10)
        pair = [batcher.submit(_x(1)), batcher.submit(_x(2))]  # arriving far faster than 2/s
        gate.set()
        for f in [first, *pair]:
            f.result(30)

    began = time.monotonic()
    round_()
    assert batcher.stats().waits == 1  # the pair was held for two more rows; none came
    round_()
    if time.monotonic() - began > 0.1:
        pytest.skip("the machine was too slow to see the pause (0.1 s)")
    assert batcher.stats().waits == 1  # no hold in the pause
    assert model.calls == [1, 2, 1, 2]


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
