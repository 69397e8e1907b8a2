"""Memory per process: proportional set size (PSS), and the bytes unloading kept.

PSS counts a process's private pages whole and each shared page divided by the number
of processes that map it, so the PSS of a server and its worker processes adds up to
what they hold together (RSS would count TensorFlow's shared libraries once per process).
It is read from ``/proc/<pid>/smaps_rollup`` (Linux 4.14+), else by summing the ``Pss:``
lines of ``/proc/<pid>/smaps``; a process that is gone or unreadable has ``None``.
``files=False`` leaves out the pages of mapped files (``Pss_File``: the interpreter's and
libraries' code, clean and shared): their share moves with how many other processes on
the machine map the same files (eight unrelated Python processes started elsewhere took
0.4 MB off a server's PSS, its RSS unchanged), so a trend over time is read without them.

``UnreclaimedLedger`` keeps, for one process, the bytes that unloading did not give back:
for each unload, PSS after it minus PSS before the matching load, summed since the
process started, the sum clamped at 0. Loads and unloads of other models in between are
taken out (see ``UnreclaimedLedger``), so a version swap does not count the new version
as a leak. Two choices, from measurements (MobileNetV2 in TensorFlow, 30 in-process
cycles): an unload that gives back more than its load took pays back earlier leftovers
(PSS moved by -53 to +62 MB per cycle with no trend; clamping each unload at 0 would
ratchet that noise up by some 100 MB in 30 cycles), and the first unload of a process
only sets its ``baseline_bytes``: its leftover is mostly the frameworks the first load
imported (TensorFlow: about 400 MB), which a replacement process pays again at its first
load, so recycling cannot win it back.

``process_memory()`` lists this process (``"server"``) and every process a registered
source reports (the worker pools): what status and ``/metrics`` show.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keepwarm.core.events import Event, EventBus
from keepwarm.core.states import State

PROC = Path("/proc")
SERVER = "server"  # the process label of the serving process itself


def pss_bytes(pid: int | None = None, *, proc: Path = PROC, files: bool = True) -> int | None:
    """PSS of ``pid`` (this process when None) in bytes; None when it cannot be read.
    ``files=False``: without the pages of mapped files (from ``smaps_rollup`` only)."""
    base = proc / (str(pid) if pid is not None else "self")
    try:
        return _pss_lines((base / "smaps_rollup").read_bytes(), files)
    except (OSError, ValueError):
        pass
    try:
        return _pss_lines((base / "smaps").read_bytes(), files)
    except (OSError, ValueError):
        return None


def _pss_lines(text: bytes, files: bool = True) -> int:
    """The sum of the ``Pss:`` lines (kB) of an smaps file, in bytes, less the
    ``Pss_File:`` lines unless ``files``; ValueError if a line it needs is missing."""
    sums = {b"Pss:": 0, b"Pss_File:": 0}
    seen = set()
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] in sums:
            if len(fields) < 2:
                raise ValueError(f"malformed smaps line {line!r}")
            sums[fields[0]] += int(fields[1]) * 1024
            seen.add(fields[0])
    needed = {b"Pss:"} if files else set(sums)
    if needed - seen:
        raise ValueError(f"no {b' '.join(sorted(needed - seen)).decode()} line")
    return sums[b"Pss:"] - (0 if files else sums[b"Pss_File:"])


def descendants(pid: int | None = None, *, proc: Path = PROC) -> list[int]:
    """Every living process below ``pid`` (this process when None), children first.
    Read from each process's ``stat`` (``/proc/<pid>/task/*/children`` is not always there)."""
    root = pid if pid is not None else os.getpid()
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone while listing, or not ours to read
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = sorted(children.get(root, ()))
    while todo:
        child = todo.pop(0)
        if child in found or child == root:
            continue
        found.append(child)
        todo.extend(sorted(children.get(child, ())))
    return found


def tree_pss_bytes(pid: int | None = None, *, proc: Path = PROC, files: bool = True) -> int:
    """The sum of PSS over ``pid`` and its descendants (unreadable ones count 0);
    ``files`` as for ``pss_bytes``."""
    root = pid if pid is not None else os.getpid()
    tree = [root, *descendants(root, proc=proc)]
    return sum(pss_bytes(p, proc=proc, files=files) or 0 for p in tree)


@dataclass
class _Load:
    seq: int
    before: int
    growth: int | None = None  # PSS after the load minus before; None until it returned


@dataclass(frozen=True)
class _Unload:
    seq: int
    load_seq: int
    growth: int  # of the model unloaded (0 when its load's end was not seen)
    charge: int  # what this unload kept (negative: it gave back earlier leftovers too)


class UnreclaimedLedger:
    """The bytes unloading did not give back, in one process (thread-safe).

    ``before_load(key)`` when a load starts, ``after_load(key)`` when it returned,
    ``after_unload(key)`` once the model is closed and freed memory given back. An
    unload's charge is PSS now minus PSS before its load, less what happened in between
    to other models: the growth of loads made since and still loaded, plus what unloads
    since kept, minus the growth of models loaded before and unloaded since. With one
    model at a time this is simply "PSS after the unload minus PSS before the load".
    ``read`` gives the process's PSS (None: unreadable, nothing is recorded).

    ``baseline_bytes``: the first unload's charge (None before it); ``total``: the later
    charges' sum, at least 0 (``UnreclaimedLedger`` in the module docstring says why).
    """

    def __init__(self, read: Callable[[], int | None] = pss_bytes) -> None:
        self._read = read
        self._lock = threading.Lock()
        self._seq = 0
        self._loads: dict[Hashable, _Load] = {}
        self._unloads: list[_Unload] = []  # since the oldest load still open
        self.baseline_bytes: int | None = None
        self._net = 0
        self.unloads = 0
        self.last_pss: int | None = None  # the last reading

    @property
    def total(self) -> int:
        """The bytes unloading did not give back, past the baseline (at least 0)."""
        return max(0, self._net)

    def before_load(self, key: Hashable) -> None:
        now = self.last_pss = self._read()
        with self._lock:
            self._seq += 1
            if now is None:
                self._loads.pop(key, None)
            else:
                self._loads[key] = _Load(self._seq, now)

    def after_load(self, key: Hashable) -> None:
        now = self.last_pss = self._read()
        with self._lock:
            load = self._loads.get(key)
            if load is not None and now is not None:
                load.growth = max(0, now - load.before)

    def forget(self, key: Hashable) -> None:
        """The load failed: nothing of it will be unloaded."""
        with self._lock:
            self._loads.pop(key, None)

    def after_unload(self, key: Hashable) -> int | None:
        """Record the unload of ``key``; returns its charge, negative when it gave back
        more than its load took (None: its load was not seen)."""
        now = self.last_pss = self._read()
        with self._lock:
            self._seq += 1
            load = self._loads.pop(key, None)
            if load is None or now is None:
                return None
            still = sum(o.growth or 0 for o in self._loads.values() if o.seq > load.seq)
            since = [u for u in self._unloads if u.seq > load.seq]
            kept = sum(u.charge for u in since)
            released = sum(u.growth for u in since if u.load_seq < load.seq)
            charge = now - load.before - still - kept + released
            self._unloads.append(_Unload(self._seq, load.seq, load.growth or 0, charge))
            oldest = min((o.seq for o in self._loads.values()), default=self._seq)
            self._unloads = [u for u in self._unloads if u.seq > oldest]
            if self.baseline_bytes is None:
                self.baseline_bytes = charge
            else:
                self._net += charge
            self.unloads += 1
            return charge

    def on_event(self, event: Event) -> None:
        """Follow a Manager's events: LOADING, READY, FAILED, and ``reclaimed`` (after an
        unload's memory was given back). Readings are taken when the event is delivered."""
        if event.kind == "reclaimed":
            self.after_unload(event.key)
        elif event.kind == "state" and event.state is State.LOADING:
            self.before_load(event.key)
        elif event.kind == "state" and event.state is State.READY:
            self.after_load(event.key)
        elif event.kind == "state" and event.state is State.FAILED:
            self.forget(event.key)

    def watch(self, events: EventBus) -> Callable[[], None]:
        """Follow ``events`` (a Manager's); returns the unsubscribe function. Keys are
        kept per bus, so two managers' ``ModelId("m", 1)`` are two models."""
        bus = id(events)

        def follow(event: Event) -> None:
            self.on_event(Event(event.kind, (bus, event.key), event.state))

        return events.subscribe(follow)


@dataclass(frozen=True)
class ProcessMemory:
    """One process of the server: ``process`` is ``"server"`` or a worker's id."""

    process: str
    pid: int
    pss_bytes: int | None
    unreclaimed_bytes: int
    unloads: int = 0
    baseline_bytes: int | None = None  # what the first unload kept (frameworks imported)

    @classmethod
    def of(cls, process: str, pid: int, ledger: UnreclaimedLedger) -> ProcessMemory:
        """The figures of ``pid``, read now, with ``ledger``'s."""
        return cls(
            process, pid, pss_bytes(pid), ledger.total, ledger.unloads, ledger.baseline_bytes
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "process": self.process,
            "pid": self.pid,
            "pss_bytes": self.pss_bytes,
            "unreclaimed_bytes": self.unreclaimed_bytes,
            "unloads": self.unloads,
            "baseline_bytes": self.baseline_bytes,
        }


Source = Callable[[], Iterable[ProcessMemory]]
_sources: list[Source] = []
_sources_lock = threading.Lock()
_ledger = UnreclaimedLedger()


def server_ledger() -> UnreclaimedLedger:
    """This process's ledger (the in-process loads: ``watch`` a Manager's events)."""
    return _ledger


def register(source: Source) -> Callable[[], None]:
    """Report more processes (a worker pool's) in ``process_memory()``; returns the
    function that stops it."""
    with _sources_lock:
        _sources.append(source)

    def unregister() -> None:
        with _sources_lock:
            if source in _sources:
                _sources.remove(source)

    return unregister


def process_memory() -> list[ProcessMemory]:
    """This process (``"server"``), then every process the registered sources report."""
    rows = [ProcessMemory.of(SERVER, os.getpid(), _ledger)]
    with _sources_lock:
        sources = list(_sources)
    for source in sources:
        rows.extend(source())
    return rows
