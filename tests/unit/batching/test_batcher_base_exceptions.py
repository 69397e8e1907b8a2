"""A model that raises a ``BaseException`` that is not an ``Exception`` (``sys.exit()``,
``KeyboardInterrupt``, ``GeneratorExit``): every request of its batch gets an
``InternalError`` naming the model and what it raised, its slot is given back, and the
batcher goes on; a ``KeyboardInterrupt`` is raised again on a ``predict`` caller's own
thread once the batch is answered (Ctrl-C is not hidden), never on a server's thread.

The model is ``support.hostile_models.Exits``, a plain Python model; a row of -4 holds
its call at a gate, so that other requests queue behind it (events, no sleeps)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest

from keepwarm.batching import Batcher, ThreadExecutor
from keepwarm.errors import InternalError
from keepwarm.repository import Repository
from support.hostile_models import Exits, place_exiting
from support.waiting import wait_until

WAIT_S = 30.0


def _x(first: float, rows: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.full((rows, 2), first, np.float32)}


@pytest.fixture
def executor() -> Iterator[ThreadExecutor]:
    Exits.gate.clear()
    Exits.held.clear()
    pool = ThreadExecutor(1)
    yield pool
    Exits.gate.set()
    pool.close()


def _batcher(executor: ThreadExecutor) -> Batcher:
    # One slot, and no caller runs alone past it: a second request queues.
    return Batcher(
        Exits().predict, name="exits", executor=executor, max_batch_size=4, max_delay_ms=0,
        slots=1, crowd=0,
    )  # fmt: skip


@pytest.mark.parametrize(("first", "words"), [(-1.0, "SystemExit: 3"), (-3.0, "GeneratorExit")])
def test_every_request_of_the_batch_is_answered_and_the_slot_freed(
    executor: ThreadExecutor, first: float, words: str
) -> None:
    batcher = _batcher(executor)
    holder = batcher.submit(_x(-4.0))  # runs on the executor, held at the gate
    assert Exits.held.wait(WAIT_S)
    queued = [batcher.submit(_x(first)), batcher.submit(_x(5.0)), batcher.submit(_x(6.0, 2))]
    Exits.gate.set()
    assert holder.result(WAIT_S)["y"].tolist() == [[-8.0, -8.0]]
    for future in queued:  # one batch of the three: each gets the model's error
        with pytest.raises(InternalError, match=f"model 'exits' failed: {words}"):
            future.result(WAIT_S)
    stats = batcher.stats()
    assert stats.failed == 3 and stats.batch_sizes == {1: 1}
    for value in (7.0, 8.0):  # the slot was given back: these run (a leak would queue them)
        assert batcher.predict(_x(value), timeout=WAIT_S)["y"].tolist() == [[2 * value] * 2]


def test_a_callers_own_keyboard_interrupt_is_raised_again(executor: ThreadExecutor) -> None:
    batcher = _batcher(executor)
    with pytest.raises(KeyboardInterrupt):
        batcher.predict(_x(-2.0), timeout=WAIT_S)  # run at once, on this thread
    assert batcher.predict(_x(1.0), timeout=WAIT_S)["y"].tolist() == [[2.0, 2.0]]


def test_a_batch_led_by_the_interrupted_caller_is_answered_first(
    executor: ThreadExecutor,
) -> None:
    """This thread's request queues behind a held call and another request; when the held
    call ends, this thread is handed the batch of both and runs it: the other request
    gets the ``InternalError``, this thread the ``KeyboardInterrupt``."""
    batcher = _batcher(executor)
    results: list[object] = []
    holder = threading.Thread(target=lambda: results.append(batcher.predict(_x(-4.0))))
    holder.start()
    assert Exits.held.wait(WAIT_S)
    other = batcher.submit(_x(5.0))

    def open_gate_once_both_queue() -> None:
        if wait_until(lambda: batcher.queued == 2, WAIT_S):
            Exits.gate.set()

    opener = threading.Thread(target=open_gate_once_both_queue)
    opener.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            batcher.predict(_x(-2.0), timeout=WAIT_S)
        with pytest.raises(InternalError, match="model 'exits' failed: KeyboardInterrupt"):
            other.result(WAIT_S)
    finally:
        Exits.gate.set()
        opener.join(WAIT_S)
        holder.join(WAIT_S)
    stats = batcher.stats()
    assert stats.failed == 2 and stats.batch_sizes == {1: 1}  # the two failed together
    assert batcher.predict(_x(1.0), timeout=WAIT_S)["y"].tolist() == [[2.0, 2.0]]


def test_a_server_thread_gets_the_error_not_the_interrupt(executor: ThreadExecutor) -> None:
    batcher = _batcher(executor)
    future: Future[dict[str, np.ndarray]] = batcher.start(_x(-2.0))  # run here, at once
    assert future.done()
    with pytest.raises(InternalError, match="KeyboardInterrupt"):
        future.result()
    assert batcher.start(_x(3.0)).result(WAIT_S)["y"].tolist() == [[6.0, 6.0]]


def test_the_library_face_of_a_batched_python_model(tmp_path: Path) -> None:
    place_exiting(tmp_path / "exits", "[batching]\nmax_batch_size = 4\n")
    Exits.gate.set()
    with Repository(tmp_path, allow_unsafe=True, poll_seconds=60) as repo:
        with repo.lease("exits", timeout=WAIT_S) as model:
            with pytest.raises(InternalError, match="model 'exits' failed: SystemExit: 3"):
                model.predict(_x(-1.0))
            with pytest.raises(KeyboardInterrupt):
                model.predict(_x(-2.0))
            for value in range(4):  # more than the model's slots: none was left taken
                assert model.predict(_x(value))["y"].tolist() == [[2.0 * value] * 2]
        assert repo.status().models["exits"].versions[1].state.name == "READY"
