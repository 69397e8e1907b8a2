"""A worker that holds too much is replaced under load, and no request fails: a real pool
of real worker processes, a model that really leaks, the watch's policy applied."""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from keepwarm.cache import ModelCache
from keepwarm.process_memory import process_memory
from keepwarm.settings import Settings, WorkerSettings
from keepwarm.workers import default_pool
from keepwarm.workers.memory import MemoryWatch, RecyclePolicy, WorkerMemory, worker_rows

MB = 1 << 20
GROWTH = 16 * MB  # 8 calls of support.leaky_models.Leaky (2 MiB each, up to 24 MiB)
MAX_CALLS = 100_000  # per caller: calls keep coming while a replacement starts
CALLERS = 4
PHASE = 40  # calls before the check, then as many after it
WAIT_S = 60.0


@pytest.fixture
def cache() -> Iterator[ModelCache]:
    cache = ModelCache(settings=Settings.from_env({}), warmup=False)
    yield cache
    cache.close()


def test_a_leaking_worker_is_replaced_under_load_and_no_request_fails(
    cache: ModelCache, tmp_path: Path
) -> None:
    model = cache.load(
        tmp_path, options={"class": "support.leaky_models:Leaky"}, workers={"processes": 2}
    )
    pool = default_pool()
    with model.acquire() as leased:
        raw = leased.raw
    mine = getattr(raw, "inner", raw)  # the WorkerModel (under batching, if any)
    before = {i.worker_id: i.pid for i in mine.workers()}
    assert len(before) == 2
    exits = {wid: os.pidfd_open(pid) for wid, pid in before.items()}  # readable at exit
    # The default limit (on unreclaimed bytes) alone never replaces it: it unloads nothing.
    idle = MemoryWatch(pool, RecyclePolicy.of(WorkerSettings()), interval=3600.0)
    watch = MemoryWatch(pool, RecyclePolicy(None, growth=GROWTH), interval=3600.0)
    lock = threading.Lock()
    calls, failures, pids = 0, [], set()
    reached = [threading.Event(), threading.Event()]
    targets = [PHASE, 0]  # the second is set once the check returned
    stop = threading.Event()
    x = np.ones((1, 4), dtype=np.float32)

    def call() -> None:
        nonlocal calls
        for _ in range(MAX_CALLS):  # bounded; ends when the test says so
            if stop.is_set():
                return
            try:
                out = model.predict({"x": x})
                np.testing.assert_array_equal(out["y"], x + 1)
            except Exception as exc:  # every failure is counted, none may happen
                with lock:
                    failures.append(exc)
                continue
            with lock:
                calls += 1
                pids.update(out["pid"].tolist())
                for target, event in zip(targets, reached, strict=True):
                    if target and calls >= target:
                        event.set()

    threads = [threading.Thread(target=call) for _ in range(CALLERS)]
    for thread in threads:
        thread.start()
    try:
        assert reached[0].wait(WAIT_S), failures[:3]
        rows = [WorkerMemory.read(i) for i in mine.workers()]
        assert max(r.grown_bytes for r in rows) >= GROWTH
        assert idle.check() == []
        replaced = watch.check()  # while the callers keep calling
        with lock:
            targets[1] = calls + PHASE
        assert reached[1].wait(WAIT_S), failures[:3]
    finally:
        stop.set()
        for thread in threads:
            thread.join(WAIT_S)
        watch.close()
        idle.close()
    assert failures == []
    ours = set(replaced) & set(before)  # the watch sees the whole pool
    assert ours
    after = {i.worker_id: i.pid for i in mine.workers() if i.state != "retiring"}
    assert len(after) == 2 and not set(replaced) & set(after)
    new_pids = {pid for wid, pid in after.items() if wid not in before}
    assert new_pids & pids  # the replacements answered requests
    try:
        assert all(_exits(exits[wid], WAIT_S) for wid in ours)  # retired once done
    finally:
        for fd in exits.values():
            os.close(fd)
    listed = {row.process for row in process_memory()}
    assert {str(wid) for wid in after} <= listed
    assert {row.process for row in worker_rows(pool)} >= {str(wid) for wid in after}


def test_the_watch_leaves_workers_under_the_threshold_alone(
    cache: ModelCache, tmp_path: Path
) -> None:
    model = cache.load(tmp_path, options={"class": "support.leaky_models:Leaky"}, workers=True)
    model.predict({"x": np.ones((1, 4), dtype=np.float32)})
    pool = default_pool()
    before = pool.workers()
    for policy in (RecyclePolicy(None), RecyclePolicy(1 << 40, growth=1 << 40)):
        watch = MemoryWatch(pool, policy, interval=3600.0)
        assert watch.check() == []
        watch.close()
    assert [i.worker_id for i in pool.workers()] == [i.worker_id for i in before]


def _exits(pidfd: int, timeout: float) -> bool:
    """Wait for the process behind ``pidfd`` to end (its pidfd becomes readable)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))
