"""A server's CPU time from ``/proc``: the figure of a benchmark that other work on a shared
machine disturbs least (it slows the server down, but adds little to what it spends)."""

from __future__ import annotations

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants (reaped children's
    time included through cutime/cstime)."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15]) / TICK
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                pending += [int(c) for c in children]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def thread_cpu_seconds(pid: int, tid: int | None = None) -> float:
    """CPU seconds of one thread of ``pid`` (default: its main thread, an event loop's in
    ``keepwarm serve``), in nanoseconds' precision (``schedstat``)."""
    text = Path(f"/proc/{pid}/task/{pid if tid is None else tid}/schedstat").read_text()
    return int(text.split()[0]) / 1e9
