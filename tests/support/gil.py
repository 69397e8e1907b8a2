"""Whether a thread gives the GIL up while it works: shared by the tests of decoding in
pieces (``jsonpieces``, ``tfpieces``)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def no_forced_switches() -> Iterator[None]:
    """A switch interval of 10 s: a thread waiting for the GIL runs only when the holder
    gives it up."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(10.0)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def turns_while(work: Callable[[], Any]) -> int:
    """How often this thread ran (waking from a short sleep, which needs the GIL) while
    another thread ran ``work``."""
    done = threading.Event()

    def run() -> None:
        try:
            work()
        finally:
            done.set()

    thread = threading.Thread(target=run)
    turns = 0
    thread.start()
    for _ in range(1_000_000):  # bounded; ends when the work does
        if done.is_set():
            break
        time.sleep(0.0001)  # waits for the GIL on waking up
        turns += 1
    thread.join()
    return turns
