"""``Pending``, the lighter future of a queued request: the same answers, errors and
transitions as ``concurrent.futures.Future`` in every state, its blocked callers,
``wait``'s waiters and done callbacks woken, without a ``Condition`` per request."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, as_completed, wait

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


def _set_twice(f: Future[object]) -> object:
    f.set_result(1)
    try:
        f.set_result(2)
    except Exception as exc:
        return type(exc)
    return None


def _fail_cancelled(f: Future[object]) -> object:
    f.cancel()
    try:
        f.set_exception(ValueError("late"))
    except Exception as exc:
        return type(exc)
    return None


def _run_twice(f: Future[object]) -> object:
    f.set_running_or_notify_cancel()
    try:
        f.set_running_or_notify_cancel()
    except Exception as exc:
        return type(exc)
    return None


def _cancel_running(f: Future[object]) -> object:
    f.set_running_or_notify_cancel()
    return (f.cancel(), f.cancelled(), f.running())


def _cancel_twice(f: Future[object]) -> object:
    return (f.cancel(), f.cancel(), f.cancelled(), f.done())


def _reads(f: Future[object], timeout: float) -> list[object]:
    """What ``result`` and ``exception`` raise, waiting ``timeout`` seconds."""
    answers: list[object] = []
    for read in (f.result, f.exception):
        try:
            read(timeout)
        except Exception as exc:
            answers.append(type(exc))
    return answers


def _result_of_cancelled(f: Future[object]) -> object:
    f.cancel()
    return _reads(f, 0)


def _timeouts(f: Future[object]) -> object:
    return _reads(f, 0.01)


def _exception_read(f: Future[object]) -> object:
    error = KeyError("k")
    f.set_exception(error)
    return (f.exception() is error, f.done())


@pytest.mark.parametrize(
    "step",
    [
        _set_twice,
        _fail_cancelled,
        _run_twice,
        _cancel_running,
        _cancel_twice,
        _result_of_cancelled,
        _timeouts,
        _exception_read,
    ],
)
def test_transitions_and_errors_as_a_plain_future(step: Callable[[Future[object]], object]) -> None:
    assert step(Pending()) == step(Future())  # type: ignore[arg-type]


def test_keeps_no_condition() -> None:
    """What it saves: no ``threading.Condition`` per request (``Future`` makes one)."""
    assert not isinstance(Pending()._condition, threading.Condition)


def test_callbacks_in_order_once_and_at_once_when_done(caplog: pytest.LogCaptureFixture) -> None:
    pending = Pending()
    seen: list[str] = []

    def broken(_: object) -> None:
        raise RuntimeError("callback broke")

    pending.add_done_callback(lambda f: seen.append("a"))
    pending.add_done_callback(broken)
    pending.add_done_callback(lambda f: seen.append("b"))
    assert seen == []
    pending.set_result({})
    assert seen == ["a", "b"]  # a broken callback is logged; the next still runs
    assert "callback broke" in caplog.text
    pending.add_done_callback(lambda f: seen.append("late"))
    assert seen == ["a", "b", "late"]
    pending.cancel()  # done already: no second round of callbacks
    assert seen == ["a", "b", "late"]


def test_cancel_calls_callbacks_and_wakes_a_blocked_caller() -> None:
    pending = Pending()
    seen: list[bool] = []
    pending.add_done_callback(lambda f: seen.append(f.cancelled()))
    errors: list[BaseException] = []

    def block() -> None:
        try:
            pending.result(timeout=10)
        except BaseException as exc:
            errors.append(exc)

    waiter = threading.Thread(target=block)
    waiter.start()
    while pending._event is None:  # the waiter is blocked on its event
        threading.Event().wait(0.001)
    assert pending.cancel()
    waiter.join(10)
    assert not waiter.is_alive()
    assert seen == [True]
    assert len(errors) == 1 and isinstance(errors[0], CancelledError)


def test_blocked_callers_on_many_threads_all_get_the_result() -> None:
    pending = Pending()
    results: list[object] = []
    lock = threading.Lock()

    def block() -> None:
        value = pending.result(timeout=10)
        with lock:
            results.append(value)

    waiters = [threading.Thread(target=block) for _ in range(8)]
    for thread in waiters:
        thread.start()
    pending.set_running_or_notify_cancel()
    pending.set_result({"z": 2})  # type: ignore[dict-item]
    for thread in waiters:
        thread.join(10)
    assert results == [{"z": 2}] * 8


def test_wait_and_as_completed_see_cancelled_and_finished() -> None:
    cancelled, finished = Pending(), Pending()
    assert cancelled.cancel()
    threading.Timer(0.05, cancelled.set_running_or_notify_cancel).start()
    threading.Timer(0.05, finished.set_result, args=({},)).start()
    done, not_done = wait([cancelled, finished], timeout=10)
    assert done == {cancelled, finished} and not not_done
    assert set(as_completed([cancelled, finished], timeout=10)) == {cancelled, finished}
    assert "finished" in repr(finished) and "cancelled" in repr(cancelled)


def test_wrap_future_on_an_event_loop() -> None:
    answered, dropped = Pending(), Pending()

    async def scenario() -> None:
        waiter = asyncio.wrap_future(answered)
        asyncio.get_running_loop().call_later(0.01, answered.set_result, {"q": 1})
        assert await waiter == {"q": 1}
        other = asyncio.wrap_future(dropped)
        other.cancel()
        with pytest.raises(asyncio.CancelledError):
            await other
        await asyncio.sleep(0.01)  # the cancel reaches the source future by call_soon

    asyncio.run(scenario())
    assert dropped.cancelled()
