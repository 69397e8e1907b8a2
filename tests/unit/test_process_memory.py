"""PSS of a process and of a process tree, and the ledger of bytes unloading kept."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from keepwarm import process_memory as pm
from keepwarm.core.events import Event, EventBus
from keepwarm.core.ids import ModelId
from keepwarm.core.states import State

KB = 1024
MB = 1 << 20


def fake_proc(
    tmp_path: Path, pid: int, ppid: int, *, rollup: str | None, smaps: str | None
) -> None:
    d = tmp_path / str(pid)
    d.mkdir()
    (d / "stat").write_text(f"{pid} (odd ) name) S {ppid} 1 1 0\n")
    if rollup is not None:
        (d / "smaps_rollup").write_text(rollup)
    if smaps is not None:
        (d / "smaps").write_text(smaps)


def test_pss_of_this_process_is_read_and_counts_new_private_pages() -> None:
    before = pm.pss_bytes()
    block = bytearray(64 * MB)  # zero pages are not resident until written
    block[::4096] = b"x" * (len(block) // 4096)
    after = pm.pss_bytes(os.getpid())
    assert before is not None and after is not None
    assert after - before > 48 * MB
    del block


def test_pss_falls_back_to_smaps_and_is_none_when_unreadable(tmp_path: Path) -> None:
    fake_proc(tmp_path, 10, 1, rollup="Rss: 9 kB\nPss:  7 kB\n", smaps="Pss: 1 kB\n")
    fake_proc(tmp_path, 11, 1, rollup=None, smaps="a-b r\nPss: 3 kB\nx\nPss: 4 kB\n")
    fake_proc(tmp_path, 12, 1, rollup="Rss: 3 kB\n", smaps=None)  # no Pss line anywhere
    fake_proc(tmp_path, 13, 1, rollup="Pss:\n", smaps="Pss: lots kB\n")  # malformed
    assert pm.pss_bytes(10, proc=tmp_path) == 7 * KB
    assert pm.pss_bytes(11, proc=tmp_path) == 7 * KB
    assert pm.pss_bytes(12, proc=tmp_path) is None
    assert pm.pss_bytes(13, proc=tmp_path) is None
    assert pm.pss_bytes(99, proc=tmp_path) is None  # gone


def test_pss_without_file_pages_subtracts_pss_file(tmp_path: Path) -> None:
    rollup = "Rss: 200 kB\nPss: 100 kB\nPss_Anon: 70 kB\nPss_File: 25 kB\nPss_Shmem: 5 kB\n"
    fake_proc(tmp_path, 14, 1, rollup=rollup, smaps=None)
    fake_proc(tmp_path, 15, 14, rollup=None, smaps="Pss: 3 kB\n")  # no Pss_File to subtract
    fake_proc(tmp_path, 16, 14, rollup="Pss: 9 kB\nPss_File: x kB\n", smaps=None)
    assert pm.pss_bytes(14, proc=tmp_path) == 100 * KB
    assert pm.pss_bytes(14, proc=tmp_path, files=False) == 75 * KB
    assert pm.pss_bytes(15, proc=tmp_path, files=False) is None
    assert pm.pss_bytes(15, proc=tmp_path) == 3 * KB
    assert pm.pss_bytes(16, proc=tmp_path, files=False) is None
    assert pm.tree_pss_bytes(14, proc=tmp_path, files=False) == 75 * KB


def test_tree_sums_descendants_and_survives_odd_names_and_loops(tmp_path: Path) -> None:
    fake_proc(tmp_path, 20, 1, rollup="Pss: 100 kB\n", smaps=None)
    fake_proc(tmp_path, 21, 20, rollup="Pss: 10 kB\n", smaps=None)
    fake_proc(tmp_path, 22, 21, rollup="Pss: 1 kB\n", smaps=None)
    fake_proc(tmp_path, 23, 20, rollup=None, smaps=None)  # unreadable: counts 0
    fake_proc(tmp_path, 30, 1, rollup="Pss: 5000 kB\n", smaps=None)  # not in the tree
    (tmp_path / "self").mkdir()  # not a pid
    (tmp_path / "24").mkdir()  # a pid without stat (gone while listing)
    assert pm.descendants(20, proc=tmp_path) == [21, 23, 22]
    assert pm.tree_pss_bytes(20, proc=tmp_path) == 111 * KB
    assert pm.descendants(99, proc=tmp_path) == []
    fake_proc(tmp_path, 40, 41, rollup="Pss: 1 kB\n", smaps=None)  # a loop (pids reused)
    fake_proc(tmp_path, 41, 40, rollup="Pss: 2 kB\n", smaps=None)
    assert pm.descendants(40, proc=tmp_path) == [41]
    assert pm.tree_pss_bytes(40, proc=tmp_path) == 3 * KB
    assert pm.tree_pss_bytes(99, proc=tmp_path) == 0


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; b = bytearray(32 << 20); b[::4096] = "
         "b'x' * (len(b) // 4096); sys.stdout.write('ok\\n'); sys.stdout.flush(); "
         "sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline() == b"ok\n"
    with proc:  # closes the pipes
        try:
            yield proc
        finally:
            proc.kill()
            proc.wait(timeout=10)


def test_the_real_tree_holds_a_child_and_its_memory(child: subprocess.Popen[bytes]) -> None:
    assert child.pid in pm.descendants()
    own, theirs = pm.pss_bytes(), pm.pss_bytes(child.pid)
    assert own is not None and theirs is not None and theirs > 24 * MB
    assert pm.tree_pss_bytes() >= own + theirs - 4 * MB  # pages move between reads
    # Without file pages: the child's 32 MB are anonymous, our code pages are files.
    own_memory = pm.pss_bytes(files=False)
    their_memory = pm.pss_bytes(child.pid, files=False)
    assert own_memory is not None and their_memory is not None
    assert their_memory > 24 * MB and own_memory < own


class Scripted:
    """A process whose PSS the test sets."""

    def __init__(self, value: int | None = 0) -> None:
        self.value = value

    def __call__(self) -> int | None:
        return self.value


def cycle(
    ledger: pm.UnreclaimedLedger, mem: Scripted, key: str, peak: int, after: int
) -> int | None:
    ledger.before_load(key)
    mem.value = peak
    ledger.after_load(key)
    mem.value = after
    return ledger.after_unload(key)


def test_the_first_unload_sets_the_baseline_and_later_ones_are_charged() -> None:
    mem = Scripted(1000)
    ledger = pm.UnreclaimedLedger(mem)
    assert cycle(ledger, mem, "a", 1500, 1400) == 400  # the framework's import stays
    assert (ledger.baseline_bytes, ledger.total) == (400, 0)
    assert cycle(ledger, mem, "a", 1900, 1430) == 30
    assert cycle(ledger, mem, "b", 1900, 1450) == 20
    assert (ledger.total, ledger.unloads) == (50, 3)


def test_an_unload_that_gives_back_more_pays_back_earlier_leftovers() -> None:
    """Allocator noise up and down does not ratchet up; the total never goes below 0."""
    mem = Scripted(1000)
    ledger = pm.UnreclaimedLedger(mem)
    cycle(ledger, mem, "a", 1500, 1400)
    assert cycle(ledger, mem, "a", 1900, 1460) == 60
    assert cycle(ledger, mem, "a", 1900, 1410) == -50
    assert ledger.total == 10
    assert cycle(ledger, mem, "a", 1900, 1300) == -110
    assert ledger.total == 0
    assert cycle(ledger, mem, "a", 1900, 1390) == 90
    assert ledger.total == 0  # back where it was after the first unload


def test_a_version_swap_does_not_count_the_new_version() -> None:
    """v2 loads while v1 serves, then v1 unloads: v2's bytes are not v1's leftovers."""
    mem = Scripted(1000)
    ledger = pm.UnreclaimedLedger(mem)
    cycle(ledger, mem, "v0", 1100, 1000)  # the baseline: 0
    ledger.before_load("v1")
    mem.value = 1500
    ledger.after_load("v1")
    ledger.before_load("v2")
    mem.value = 2100
    ledger.after_load("v2")  # growth 600
    mem.value = 1620  # v1 unloaded, 20 kept
    assert ledger.after_unload("v1") == 20
    mem.value = 1040  # v2 unloaded, 20 kept
    assert ledger.after_unload("v2") == 20
    assert ledger.total == 40


def test_interleaved_loads_and_unloads_charge_each_its_own_leftover() -> None:
    """K loads; J (loaded before K) unloads keeping 5; L loads and unloads keeping 7;
    K unloads keeping 11: neither J's release nor L's leftover lands on K."""
    mem = Scripted(100)
    ledger = pm.UnreclaimedLedger(mem)
    cycle(ledger, mem, "first", 150, 100)
    ledger.before_load("J")
    mem.value = 300
    ledger.after_load("J")  # growth 200
    ledger.before_load("K")
    mem.value = 700
    ledger.after_load("K")  # growth 400
    mem.value = 505  # J gone, 5 kept
    assert ledger.after_unload("J") == 5
    ledger.before_load("L")
    mem.value = 605
    ledger.after_load("L")
    mem.value = 512  # L gone, 7 kept
    assert ledger.after_unload("L") == 7
    mem.value = 123  # K gone, 11 kept: 100 + 5 + 7 + 11
    assert ledger.after_unload("K") == 11
    assert ledger.total == 23


def test_unseen_failed_and_unreadable_loads_record_nothing() -> None:
    mem = Scripted(100)
    ledger = pm.UnreclaimedLedger(mem)
    assert ledger.after_unload("never loaded") is None
    ledger.before_load("f")
    mem.value = 900
    ledger.forget("f")  # a failed load is not an unload
    assert ledger.after_unload("f") is None
    mem.value = None
    ledger.before_load("x")
    mem.value = 500
    assert ledger.after_unload("x") is None
    ledger.before_load("y")
    mem.value = None
    assert ledger.after_unload("y") is None
    assert (ledger.baseline_bytes, ledger.total, ledger.unloads) == (None, 0, 0)


def test_manager_events_drive_the_ledger_per_bus() -> None:
    mem = Scripted(100)
    ledger = pm.UnreclaimedLedger(mem)
    key = ModelId("m", 1)
    ledger.on_event(Event("state", key, state=State.LOADING))
    mem.value = 400
    ledger.on_event(Event("state", key, state=State.READY))
    mem.value = 150
    ledger.on_event(Event("state", key, state=State.DRAINING))  # not yet given back
    ledger.on_event(Event("reclaimed", key, nbytes=250))
    assert (ledger.baseline_bytes, ledger.total) == (50, 0)
    ledger.on_event(Event("state", key, state=State.LOADING))
    ledger.on_event(Event("state", key, state=State.FAILED))
    ledger.on_event(Event("reclaimed", key))
    assert ledger.unloads == 1

    seen: list[Event] = []
    bus_a, bus_b = EventBus(), EventBus()
    try:
        stop_a, stop_b = ledger.watch(bus_a), ledger.watch(bus_b)
        bus_a.subscribe(seen.append)
        bus_a.emit(Event("state", key, state=State.LOADING))
        bus_a.close()
        mem.value = 180  # bus b's "m:1" was never loaded: no charge for it
        bus_b.emit(Event("reclaimed", key))
        bus_b.close()
        assert ledger.unloads == 1
        stop_a()
        stop_b()
    finally:
        bus_a.close()
        bus_b.close()
    assert len(seen) == 1


def test_process_memory_lists_the_server_and_registered_sources() -> None:
    row = pm.ProcessMemory("w1", 4242, 10 * MB, 3 * MB, 2, 400 * MB)
    unregister = pm.register(lambda: [row])
    try:
        rows = pm.process_memory()
        assert rows[0].process == pm.SERVER and rows[0].pid == os.getpid()
        assert rows[0].pss_bytes is not None and rows[0].pss_bytes > 0
        assert row in rows
        assert row.to_dict() == {
            "process": "w1", "pid": 4242, "pss_bytes": 10 * MB,
            "unreclaimed_bytes": 3 * MB, "unloads": 2, "baseline_bytes": 400 * MB,
        }  # fmt: skip
    finally:
        unregister()
    unregister()  # idempotent
    assert row not in pm.process_memory()


def test_status_lists_processes_only_when_asked(tmp_path: Path) -> None:
    from keepwarm import Repository

    repo = Repository(tmp_path, watch=False)
    try:
        assert repo.status().processes == []
        status = repo.status(processes=True)
        assert [p.process for p in status.processes][:1] == [pm.SERVER]
        assert status.to_dict()["processes"][0]["pid"] == os.getpid()
    finally:
        repo.close()


def test_metrics_show_pss_and_unreclaimed_per_process() -> None:
    from keepwarm.metrics import Metrics

    unregister = pm.register(lambda: [pm.ProcessMemory("7", 4242, None, 5 * MB)])
    try:
        text = Metrics().render().decode()
    finally:
        unregister()
    assert 'keepwarm_process_pss_bytes{process="server"}' in text
    assert 'keepwarm_process_pss_bytes{process="7"}' not in text  # unreadable: no sample
    assert 'keepwarm_process_unreclaimed_bytes{process="7"} 5.24288e+06' in text
