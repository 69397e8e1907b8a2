"""Giving memory back after an unload, and measuring what came back; keeping the collector
off the objects that live as long as the models (``freeze_heap``)."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
from functools import cache

from keepwarm.core.events import Event
from keepwarm.core.states import State


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


def freeze_heap() -> None:
    """Collect the young generations' garbage, then move every object alive now out of
    the collector's reach (``gc.freeze``). Once TensorFlow and a model are loaded the heap
    holds a few hundred thousand tracked objects, and each full collection walks them all:
    a pause of about 200 ms every few thousand requests. A server freezes its heap when a
    version becomes READY; ``release_memory`` thaws it for its collection, so an unloaded
    model's cycles are still reclaimed.

    Not a full collection first: at READY it walks every object (0.2 s of CPU with the
    GIL held, as the first requests arrive) and found nothing to free after loading the
    example models (the collector's own full passes during the load had); an old cycle
    frozen here is freed at the next ``release_memory``."""
    gc.collect(1)
    gc.freeze()


def freeze_when_ready(event: Event) -> None:
    """A Manager event subscriber: ``freeze_heap`` when a version becomes READY."""
    if event.kind == "state" and event.state is State.READY:
        freeze_heap()


def release_memory() -> None:
    """Collect garbage (frozen objects included: the heap is thawed, collected and frozen
    again), then return freed heap pages to the system where libc allows."""
    frozen = gc.get_freeze_count() > 0
    if frozen:
        gc.unfreeze()
    gc.collect()
    if frozen:
        gc.freeze()
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is not None:
        trim(0)
