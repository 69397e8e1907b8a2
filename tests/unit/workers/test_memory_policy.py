"""The worker memory hook and the recycle policy (the pool itself: tests/integration)."""

from __future__ import annotations

import mmap

from keepwarm.settings import WorkerSettings
from keepwarm.workers.memory import RecyclePolicy, WorkerMemory, memory_hook

MB = 1 << 20
GB = 1 << 30


def row(
    worker_id: int, pss: int | None, loaded: int | None, kept: int = 0, state: str = "ready"
) -> WorkerMemory:
    return WorkerMemory(worker_id, state, pss, loaded, kept)


def test_growth_is_pss_now_past_pss_after_the_load() -> None:
    assert row(1, 900 * MB, 700 * MB).grown_bytes == 200 * MB
    assert row(1, 600 * MB, 700 * MB).grown_bytes == 0  # shrank (shared pages split further)
    assert row(1, None, 700 * MB).grown_bytes == 0  # unreadable
    assert row(1, 900 * MB, None).grown_bytes == 0  # no load figure yet


def test_the_policy_names_serving_workers_past_either_limit() -> None:
    rows = [
        row(1, 700 * MB, 700 * MB, kept=256 * MB),  # exactly the unreclaimed limit
        row(2, 700 * MB, 700 * MB, kept=256 * MB - 1),  # just under
        row(3, 2000 * MB, 700 * MB, state="busy"),  # grew 1300 MB
        row(4, 700 * MB, 700 * MB, kept=GB, state="retiring"),  # already being replaced
        row(5, 700 * MB, 700 * MB, kept=GB, state="restarting"),
    ]
    default = RecyclePolicy(256 * MB)
    assert [wid for wid, _ in default.due(rows)] == [1]  # growth is off by default
    assert default.why(rows[0]) == "its unloads left 256 MB behind"
    both = RecyclePolicy(256 * MB, growth=GB)
    assert [wid for wid, _ in both.due(rows)] == [1, 3]
    assert both.why(rows[2]) == "it grew 1300 MB past its load"
    assert RecyclePolicy(None).due(rows) == []
    assert RecyclePolicy.of(WorkerSettings()) == RecyclePolicy(256 * MB, None)
    assert RecyclePolicy.of(
        WorkerSettings(recycle_unreclaimed_bytes="none", recycle_growth_bytes="1GiB")
    ) == RecyclePolicy(None, GB)


class Info:
    def __init__(self, figures: dict[str, dict[str, float]]) -> None:
        self.worker_id, self.pid, self.state, self.figures = 7, 2**22 + 1, "ready", figures


def test_worker_memory_reads_the_hooks_figures() -> None:
    info = Info({"after_load": {"pss_bytes": 700.0 * MB, "unreclaimed_bytes": 3.0}})
    read = WorkerMemory.read(info)
    assert (read.worker_id, read.loaded_pss_bytes, read.unreclaimed_bytes) == (7, 700 * MB, 3)
    assert read.pss_bytes is None  # no such process
    assert WorkerMemory.read(info, pss=False).pss_bytes is None
    assert WorkerMemory.read(Info({})).loaded_pss_bytes is None


def test_the_hook_reports_this_process_around_loads_and_unloads() -> None:
    assert memory_hook("before_unload", "m") is None
    before = memory_hook("before_load", "m")
    # fresh pages of their own (a bytearray may reuse heap pages already resident from
    # earlier tests: the full suite once saw 22.4 MB of 32 grow)
    block = mmap.mmap(-1, 32 * MB)
    block[::4096] = b"x" * (len(block) // 4096)
    loaded = memory_hook("after_load", "m")
    assert before is not None and loaded is not None
    assert loaded["pss_bytes"] - before["pss_bytes"] > 24 * MB
    unloaded = memory_hook("after_unload", "m")
    assert unloaded is not None and unloaded["unloads"] == loaded["unloads"] + 1
    assert set(unloaded) == {"pss_bytes", "unreclaimed_bytes", "unloads"}
    del block
