"""``Batcher.predict``'s callers on threads: a few run side by side, each alone, as
without batching; past ``crowd`` their requests queue and are batched; the count of
callers in comes back whatever became of their requests; the server's ``start`` is not
counted.

Synchronised with a barrier and events inside the model, never with sleeps: calls that
must be inside the model at once meet at a barrier, which breaks (failing them) when one
of them queued instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np
import pytest

from keepwarm.batching import Batcher
from keepwarm.batching.merge import NO_PADDING
from keepwarm.batching.model import BatchedModel
from keepwarm.errors import DeadlineExceededError, UnavailableError
from support.batch_models import InlineExecutor, RowLoaded, RowModel
from support.waiting import wait_until

Arrays = dict[str, np.ndarray]


def _x(value: float) -> Arrays:
    return {"x": np.full((1, 3), value, np.float32)}


class Meeting:
    """``RowModel`` whose calls first run ``hold`` (swapped by the test); ``began`` counts
    the calls that reached the model."""

    def __init__(self, hold: Callable[[], object]) -> None:
        self.hold = hold
        self.rows = RowModel()
        self.began: list[int] = []

    def predict(self, inputs: Arrays) -> Arrays:
        self.began.append(len(inputs["x"]))
        self.hold()
        return self.rows.predict(inputs)

    def meet(self, parties: int) -> None:
        """From now on, calls wait until ``parties`` of them are inside at once."""
        barrier = threading.Barrier(parties, timeout=10)
        self.hold = barrier.wait


def _calls(
    batcher: Batcher, values: list[int], results: dict[int, object]
) -> list[threading.Thread]:
    def call(value: int) -> None:
        try:
            results[value] = batcher.predict(_x(value), timeout=30)
        except Exception as exc:
            results[value] = exc

    threads = [threading.Thread(target=call, args=(v,)) for v in values]
    for thread in threads:
        thread.start()
    return threads


def _joined(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)


def _echo(result: object) -> float:
    assert isinstance(result, dict), result
    return float(result["x_echo"][0, 0])


def test_up_to_crowd_callers_run_side_by_side_each_alone() -> None:
    """Three callers on one slot: each runs alone on its own thread, all three inside the
    model at once (without ``crowd`` two of them would queue behind the first and the
    barrier would break); no executor thread, no batch."""
    executor = InlineExecutor()  # holds any job: one submitted would never run
    model = Meeting(lambda: None)
    model.meet(3)
    batcher = Batcher(model.predict, name="m", executor=executor, max_delay_ms=0, slots=1, crowd=3)
    results: dict[int, object] = {}
    _joined(_calls(batcher, [0, 1, 2], results))
    assert [_echo(results[v]) for v in range(3)] == [0.0, 2.0, 4.0]
    assert model.rows.calls == [1, 1, 1] and executor.jobs == []
    assert batcher.stats().batch_sizes == {1: 3} and batcher.queued == 0


def test_past_the_crowd_requests_queue_and_run_as_one_batch() -> None:
    executor = InlineExecutor()
    gate = threading.Event()
    model = Meeting(lambda: gate.wait(10))
    batcher = Batcher(model.predict, name="m", executor=executor, max_delay_ms=0, slots=1, crowd=2)
    results: dict[int, object] = {}
    threads = _calls(batcher, [0, 1], results)
    assert wait_until(lambda: len(model.began) == 2)  # the crowd: both run, alone
    threads += _calls(batcher, [2, 3], results)
    assert wait_until(lambda: batcher.queued == 2)  # past it: queued
    gate.set()
    _joined(threads)
    assert sorted(model.rows.calls) == [1, 1, 2] and executor.jobs == []
    assert [_echo(results[v]) for v in range(4)] == [0.0, 2.0, 4.0, 6.0]


def test_the_count_of_callers_comes_back_after_expiry_refusal_and_errors() -> None:
    """Callers that expired in the queue, were refused (queue full) or whose run failed
    leave the count: two callers then still run side by side (a leaked count would queue
    the second, and the barrier would break)."""
    executor = InlineExecutor()
    gate = threading.Event()
    model = Meeting(lambda: gate.wait(10))
    batcher = Batcher(
        model.predict, name="m", executor=executor, max_delay_ms=0, slots=1, crowd=2,
        max_queue=1,
    )  # fmt: skip
    results: dict[int, object] = {}
    threads = _calls(batcher, [0, 1], results)
    assert wait_until(lambda: len(model.began) == 2)
    with pytest.raises(DeadlineExceededError):
        batcher.predict(_x(5), timeout=0.05)  # queued behind the crowd, past its deadline
    threads += _calls(batcher, [2], results)
    assert wait_until(lambda: batcher.queued == 1)
    with pytest.raises(UnavailableError, match="overloaded"):
        batcher.predict(_x(6), timeout=30)
    gate.set()
    _joined(threads)
    assert [_echo(results[v]) for v in range(3)] == [0.0, 2.0, 4.0]

    def fail() -> None:
        raise RuntimeError("broken call")

    model.hold = fail
    with pytest.raises(RuntimeError, match="broken call"):
        batcher.predict(_x(7), timeout=30)
    model.meet(2)
    _joined(_calls(batcher, [8, 9], results))
    assert [_echo(results[v]) for v in (8, 9)] == [16.0, 18.0]
    assert np.full(3, 5, np.float32).tobytes() not in model.rows.seen  # expired: not run


def test_the_servers_start_is_not_counted_past_the_slots() -> None:
    """``start`` (a server's worker thread) past the slot queues, whatever ``crowd``."""
    executor = InlineExecutor()
    gate = threading.Event()
    model = Meeting(lambda: gate.wait(10))
    batcher = Batcher(model.predict, name="m", executor=executor, max_delay_ms=0, slots=1, crowd=8)
    first: list[Future[Arrays]] = []
    holder = threading.Thread(target=lambda: first.append(batcher.start(_x(0))))
    holder.start()
    assert wait_until(lambda: len(model.began) == 1)
    pending = batcher.start(_x(1), follow=False)
    assert not pending.done() and batcher.queued == 1
    gate.set()
    _joined([holder])
    assert _echo(first[0].result(30)) == 0.0
    executor.run_all()  # the queued request's batch went to the executor
    assert _echo(pending.result(30)) == 2.0


class MeetingLoaded:
    """``Meeting`` as a ``LoadedModel`` (``RowLoaded``'s signature)."""

    def __init__(self, meeting: Meeting) -> None:
        self.meeting = meeting
        self.signature = RowLoaded().signature
        self.nbytes = 0
        self.nbytes_source = "files"

    def predict(self, inputs: Arrays) -> Arrays:
        return self.meeting.predict(inputs)

    def close(self) -> None:
        pass


def _batched(meeting: Meeting, slots: int | None) -> BatchedModel:
    return BatchedModel(
        MeetingLoaded(meeting), name="m", max_batch_size=8, max_delay_ms=0, max_queue=8,
        pad_axes=NO_PADDING, executor=InlineExecutor(), slots=slots,
    )  # fmt: skip


def test_an_in_process_model_lets_its_crowd_run_alone_a_worker_model_queues() -> None:
    """Through the load path's ``BatchedModel``: an in-process model (one batch slot
    here) lets 4 callers run side by side; a model whose one slot is a worker process
    queues the second caller (it would wait for the process anyway), to be batched."""
    meeting = Meeting(lambda: None)
    meeting.meet(4)
    in_process = _batched(meeting, None)
    results: dict[int, object] = {}
    _joined(_calls(in_process.batcher, [0, 1, 2, 3], results))
    assert [_echo(results[v]) for v in range(4)] == [0.0, 2.0, 4.0, 6.0]
    in_process.close()
    gate = threading.Event()
    held = Meeting(lambda: gate.wait(10))
    worker = _batched(held, 1)
    threads = _calls(worker.batcher, [0], results)
    assert wait_until(lambda: len(held.began) == 1)
    threads += _calls(worker.batcher, [1], results)
    assert wait_until(lambda: worker.batcher.queued == 1)
    gate.set()
    _joined(threads)
    assert held.rows.calls == [1, 1] and _echo(results[1]) == 2.0
    worker.close()
