"""``Pending`` answers ``done()`` and ``cancelled()`` without its lock: the same answers as
``concurrent.futures.Future`` in every state, and its waiters are still woken."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, wait

import pytest

from keepwarm.batching.pending import Pending


def _pending(f: Future[object]) -> None:
    pass


def _running(f: Future[object]) -> None:
    assert f.set_running_or_notify_cancel()


def _cancelled(f: Future[object]) -> None:
    assert f.cancel()


def _cancelled_notified(f: Future[object]) -> None:
    assert f.cancel()
    assert not f.set_running_or_notify_cancel()


def _finished(f: Future[object]) -> None:
    f.set_result(1)


def _failed(f: Future[object]) -> None:
    f.set_exception(ValueError("x"))


@pytest.mark.parametrize(
    "into", [_pending, _running, _cancelled, _cancelled_notified, _finished, _failed]
)
def test_states_answer_as_a_plain_future(into: Callable[[Future[object]], None]) -> None:
    plain: Future[object] = Future()
    pending = Pending()
    into(plain)
    into(pending)  # type: ignore[arg-type]
    assert (pending.done(), pending.cancelled()) == (plain.done(), plain.cancelled())
    assert pending.running() == plain.running()
    if plain.done() and not plain.cancelled():
        if plain.exception() is None:
            assert pending.result() == plain.result() == 1
        else:
            with pytest.raises(ValueError, match="x"):
                pending.result()


def test_a_result_from_another_thread_wakes_its_waiters() -> None:
    pending = Pending()
    seen: list[object] = []
    pending.add_done_callback(lambda f: seen.append(f.result()))
    setter = threading.Thread(target=pending.set_result, args=({"y": 1},))
    setter.start()
    done, _ = wait([pending], timeout=10)
    setter.join()
    assert done == {pending}
    assert pending.done() and not pending.cancelled()
    assert pending.result() == {"y": 1} and seen == [{"y": 1}]
