"""The model threads' priority (``keepwarm.thread_priority``): a thread that calls
``lower_this_thread`` takes the configured nice value and policy, nothing happens until
``configure``, the batch executor's threads lower themselves unless the scope is the
runtime's alone, and bad values are refused.
Linux only (nice and policy per thread)."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from keepwarm import thread_priority
from keepwarm.batching.executor import ThreadExecutor
from keepwarm.errors import InvalidConfigError
from keepwarm.settings import ServerSettings, Settings

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux threads")
T = TypeVar("T")


@pytest.fixture(autouse=True)
def _off_after() -> Iterator[None]:
    yield
    thread_priority.configure(0)


def on_new_thread(fn: Callable[[], T]) -> T:
    """``fn()`` on a thread of its own (a lowered thread cannot be raised again)."""
    found: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            found.append(fn())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return found[0]


def own_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def lowered(part: str = "runtime") -> tuple[int, int]:
    thread_priority.lower_this_thread(part)
    tid = threading.get_native_id()
    return os.getpriority(os.PRIO_PROCESS, tid), os.sched_getscheduler(tid)


def test_nothing_changes_until_configured() -> None:
    base = own_nice()
    assert thread_priority.configured() is None
    assert on_new_thread(lowered) == (base, os.SCHED_OTHER)


def test_a_thread_takes_the_nice_value_above_the_process_and_others_keep_theirs() -> None:
    base = own_nice()
    assert thread_priority.configure(3) == (min(19, base + 3), "normal")
    assert on_new_thread(lowered) == (min(19, base + 3), os.SCHED_OTHER)
    assert own_nice() == base  # only the calling thread moves
    assert on_new_thread(own_nice) == base


def test_the_nice_value_stops_at_19() -> None:
    assert thread_priority.configure(19) == (19, "normal")
    assert on_new_thread(lowered)[0] == 19


@pytest.mark.parametrize(
    ("policy", "expected"), [("batch", os.SCHED_BATCH), ("idle", os.SCHED_IDLE)]
)
def test_a_policy_applies_to_the_thread(policy: str, expected: int) -> None:
    thread_priority.configure(0, policy)
    assert on_new_thread(lowered) == (own_nice(), expected)


def test_a_lowered_thread_lowered_again_stays_where_it_is() -> None:
    thread_priority.configure(2)

    def twice() -> tuple[int, int]:
        lowered()
        return lowered()

    assert on_new_thread(twice)[0] == min(19, own_nice() + 2)


def test_the_batch_executors_threads_run_at_the_configured_priority() -> None:
    base = own_nice()
    thread_priority.configure(4, "batch")
    executor = ThreadExecutor(2)
    try:
        got = executor.submit(lambda: (own_nice(), os.sched_getscheduler(0))).result(30)
    finally:
        executor.close()
    assert got == (min(19, base + 4), os.SCHED_BATCH)


def test_the_runtime_scope_lowers_the_loads_thread_and_not_the_executors() -> None:
    base = own_nice()
    thread_priority.configure(5, "batch", "runtime")
    assert on_new_thread(lowered) == (min(19, base + 5), os.SCHED_BATCH)
    assert on_new_thread(lambda: lowered("executor")) == (base, os.SCHED_OTHER)
    executor = ThreadExecutor(2)
    try:
        got = executor.submit(lambda: (own_nice(), os.sched_getscheduler(0))).result(30)
    finally:
        executor.close()
    assert got == (base, os.SCHED_OTHER)
    thread_priority.configure(5, "batch", "all")  # both parts again
    assert on_new_thread(lambda: lowered("executor")) == (min(19, base + 5), os.SCHED_BATCH)


def test_a_thread_made_by_a_lowered_thread_starts_lowered() -> None:
    """What the runtime scope rests on: a load's thread, once lowered, passes its
    priority on to the threads it makes (the runtime's pools)."""
    base = own_nice()
    thread_priority.configure(3, "idle", "runtime")

    def lower_then_spawn() -> tuple[int, int]:
        lowered()
        return on_new_thread(lambda: (own_nice(), os.sched_getscheduler(0)))

    assert on_new_thread(lower_then_spawn) == (min(19, base + 3), os.SCHED_IDLE)


@pytest.mark.parametrize(("nice", "policy"), [(-1, "normal"), (20, "normal"), ("3", "normal"),
                                              (True, "normal"), (1.5, "normal"), (0, "fast"),
                                              (0, ""), (0, None)])  # fmt: skip
def test_bad_values_are_refused(nice: object, policy: object) -> None:
    with pytest.raises(ValueError):
        thread_priority.configure(nice, policy)  # type: ignore[arg-type]
    assert thread_priority.configured() is None


def test_a_bad_scope_or_part_is_refused() -> None:
    with pytest.raises(ValueError, match="scope"):
        thread_priority.configure(3, "normal", "pools")
    assert thread_priority.configured() is None
    thread_priority.configure(3)
    with pytest.raises(ValueError, match="part"):
        thread_priority.lower_this_thread("loop")


def test_the_settings_fields_parse_and_refuse() -> None:
    assert ServerSettings().model_nice == 0
    assert ServerSettings().model_policy == "normal"
    assert ServerSettings().model_priority_scope == "all"
    env = {"KEEPWARM_SERVER__MODEL_NICE": "7", "KEEPWARM_SERVER__MODEL_POLICY": "batch",
           "KEEPWARM_SERVER__MODEL_PRIORITY_SCOPE": "runtime"}  # fmt: skip
    loaded = Settings.load(environ=env)
    server = loaded.server
    assert (server.model_nice, server.model_policy, server.model_priority_scope) == (
        7, "batch", "runtime")  # fmt: skip
    for bad in ({"model_nice": 20}, {"model_nice": -1}, {"model_nice": "x"},
                {"model_policy": "fifo"}, {"model_priority_scope": "pools"}):  # fmt: skip
        with pytest.raises(InvalidConfigError):
            ServerSettings(**bad)  # type: ignore[arg-type]
