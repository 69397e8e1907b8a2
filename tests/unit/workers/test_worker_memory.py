"""The worker memory hook and the recycle policy (the pool itself: tests/integration)."""

from __future__ import annotations

from keepwarm.workers.memory import WorkerMemory, due_for_recycle, memory_hook

MB = 1 << 20


def row(
    worker_id: int, pss: int | None, loaded: int | None, kept: int = 0, state: str = "ready"
) -> WorkerMemory:
    return WorkerMemory(worker_id, state, pss, loaded, kept)


def test_excess_is_what_unloads_kept_plus_growth_since_the_load() -> None:
    assert row(1, 900 * MB, 700 * MB).excess_bytes == 200 * MB
    assert row(1, 600 * MB, 700 * MB).excess_bytes == 0  # shrank (shared pages split further)
    assert row(1, 900 * MB, 700 * MB, kept=50 * MB).excess_bytes == 250 * MB
    assert row(1, None, 700 * MB, kept=5).excess_bytes == 5  # unreadable: only the ledger
    assert row(1, 900 * MB, None).excess_bytes == 0  # no load figure yet


def test_due_for_recycle_names_serving_workers_at_the_threshold() -> None:
    rows = [
        row(1, 956 * MB, 700 * MB),  # exactly 256 MiB
        row(2, 955 * MB, 700 * MB),  # just under
        row(3, 2000 * MB, 700 * MB, state="busy"),
        row(4, 2000 * MB, 700 * MB, state="retiring"),  # already being replaced
        row(5, 2000 * MB, 700 * MB, state="restarting"),
    ]
    assert due_for_recycle(rows, 256 * MB) == [1, 3]
    assert due_for_recycle(rows, None) == []
    assert due_for_recycle([], 1) == []


class Info:
    def __init__(self, figures: dict[str, dict[str, float]]) -> None:
        self.worker_id, self.pid, self.state, self.figures = 7, 2**22 + 1, "ready", figures


def test_worker_memory_reads_the_hooks_figures() -> None:
    info = Info({"after_load": {"pss_bytes": 700.0 * MB, "unreclaimed_bytes": 3.0}})
    read = WorkerMemory.read(info)
    assert (read.worker_id, read.loaded_pss_bytes, read.unreclaimed_bytes) == (7, 700 * MB, 3)
    assert read.pss_bytes is None  # no such process
    assert WorkerMemory.read(Info({})).loaded_pss_bytes is None


def test_the_hook_reports_this_process_around_loads_and_unloads() -> None:
    assert memory_hook("before_unload", "m") is None
    before = memory_hook("before_load", "m")
    block = bytearray(32 * MB)
    block[::4096] = b"x" * (len(block) // 4096)
    loaded = memory_hook("after_load", "m")
    assert before is not None and loaded is not None
    assert loaded["pss_bytes"] - before["pss_bytes"] > 24 * MB
    unloaded = memory_hook("after_unload", "m")
    assert unloaded is not None and unloaded["unloads"] == loaded["unloads"] + 1
    assert set(unloaded) == {"pss_bytes", "unreclaimed_bytes", "unloads"}
    del block
