"""``bench/thread_costs.py``: per-thread CPU and context switches from ``/proc``, read on
this process's own threads, and their per-request table."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from thread_costs import ThreadStat, group_name, per_request, thread_stats


def test_a_thread_that_works_and_waits_shows_its_cpu_and_switches() -> None:
    ready, go, done, leave = (threading.Event() for _ in range(4))
    ids: list[int] = []

    def work() -> None:
        # The ids as /proc names them ("PID/task/TID"), whatever namespace we run in
        process, _, thread = os.readlink("/proc/thread-self").partition("/task/")
        ids.extend((int(process), int(thread)))
        ready.set()
        assert go.wait(10)
        began = time.thread_time()
        limit = time.monotonic() + 20
        while time.thread_time() - began < 0.05 and time.monotonic() < limit:
            sum(range(1000))  # CPU, 50 ms of it
        for _ in range(5):  # five waits that must sleep: voluntary switches
            nudge = threading.Event()
            threading.Timer(0.001, nudge.set).start()
            assert nudge.wait(10)
        done.set()
        assert leave.wait(10)  # alive until the second snapshot

    thread = threading.Thread(target=work)
    thread.start()
    assert ready.wait(10)
    pid, mine = ids
    before = thread_stats(pid)
    go.set()
    assert done.wait(30)
    after = thread_stats(pid)
    leave.set()
    thread.join()
    assert mine in before and mine in after
    assert after[mine].cpu_seconds - before[mine].cpu_seconds >= 0.04
    assert after[mine].voluntary - before[mine].voluntary >= 5
    assert after[pid].name == before[pid].name


def test_per_request_groups_divides_and_leaves_idle_threads_out() -> None:
    pid = 100
    before = {
        100: ThreadStat("python", 1.0, 10, 1),
        101: ThreadStat("python", 2.0, 20, 0),
        102: ThreadStat("tf_Compute", 0.5, 5, 0),
        104: ThreadStat("python", 3.0, 7, 7),  # idle throughout
    }
    after = {
        100: ThreadStat("python", 1.5, 30, 3),
        101: ThreadStat("python", 2.1, 40, 0),
        102: ThreadStat("tf_Compute", 0.6, 15, 0),
        103: ThreadStat("tf_Compute", 0.1, 5, 2),  # born meanwhile: from zero
        104: ThreadStat("python", 3.0, 7, 7),
    }
    rows = per_request(pid, before, after, 10)
    assert [row["thread"] for row in rows] == ["main", "tf_Compute", "python 101"]
    main, tf, other = rows
    assert main["cpu_us"] == 50_000 and main["voluntary"] == 2 and main["involuntary"] == 0.2
    assert round(float(tf["cpu_us"])) == 20_000 and tf["voluntary"] == 1.5
    assert round(float(other["cpu_us"])) == 10_000 and other["voluntary"] == 2


def test_group_names() -> None:
    assert group_name(7, 7, "python") == "main"
    assert group_name(7, 9, "python") == "python 9"
    assert group_name(7, 9, "tf_Compute") == "tf_Compute"
    assert group_name(7, 9, "grpc_worker_12") == "grpc_worker"
