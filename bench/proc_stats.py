"""A server's CPU time from ``/proc``: the figure of a benchmark that other work on a shared
machine disturbs least (it slows the server down, but adds little to what it spends)."""

from __future__ import annotations

import os
from pathlib import Path

from keepwarm.process_memory import descendants

TICK = os.sysconf("SC_CLK_TCK")


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its live descendants (a ``--processes N`` server's supervisor and its
    server processes), read as the server reads its own tree
    (``keepwarm.process_memory.descendants``); none when ``pid`` has ended."""
    if not Path(f"/proc/{pid}").exists():
        return []
    return [pid, *descendants(pid)]


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants (reaped children's
    time included through cutime/cstime)."""
    total = 0.0
    for current in tree_pids(pid):
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += sum(int(x) for x in fields[11:15]) / TICK
    return total


def thread_cpu_seconds(pid: int, tid: int | None = None) -> float:
    """CPU seconds of one thread of ``pid`` (default: its main thread, an event loop's in
    ``keepwarm serve``), in nanoseconds' precision (``schedstat``)."""
    text = Path(f"/proc/{pid}/task/{pid if tid is None else tid}/schedstat").read_text()
    return int(text.split()[0]) / 1e9
