"""Giving memory back after an unload, and measuring what came back."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
from functools import cache


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def rss_bytes() -> int:
    """Resident set size of this process (0 where it cannot be read)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def budget_bytes(max_bytes: float | None) -> int | None:
    """``max_bytes`` as bytes: a number of bytes, or a share of RAM when in (0, 1]."""
    if max_bytes is None:
        return None
    if 0 < max_bytes <= 1:
        return int(max_bytes * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return int(max_bytes)


def release_memory() -> None:
    """Collect garbage, then return freed heap pages to the system where libc allows."""
    gc.collect()
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is not None:
        trim(0)
