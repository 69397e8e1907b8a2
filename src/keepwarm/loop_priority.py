"""The event loop's thread ahead of the server's other threads for a core.

Under load the two cores are shared by the model's threads (a TensorFlow batch uses
them all), the threads decoding large bodies and the event loop; at equal priority a
woken loop waits its turn for a core (``bench/overload.py``'s ``loop_wait_us``: ~300 us
on average each time it woke, at 3-4x MobileNetV2's capacity offered), and every
request that needs the loop waits with it, a refusal first: its 503 is nothing but loop
work. ``favour_loop()``, called on the loop's thread before it runs, puts every other
thread of the process ``WORKER_NICE`` steps nicer than it (Linux: a thread's nice value
is its own): the threads there now (TensorFlow's pools, made at preload), and through
``threading.setprofile`` each thread started later, once, as it starts (native threads
made later by those inherit their nice value). A woken loop then takes a core from a
worker at once. Overload cell, 300 req/s offered, 2 rounds each, load 3-3.6: loop's wait
per wake 115-189 us against 324-350, 503s' p50 1.9-2.3 ms against 5.7-6.6, their p99
14-28 ms against 34-41.

The cost: on a machine shared with other processes, the server's workers yield to
theirs as well as to its own loop. Lowering a nice value needs a privilege the server
does not ask for, so the loop's own is never touched; where nice values cannot be set,
nothing changes.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

#: How much nicer than the event loop's thread the others run: nice 5 weighs about a
#: third of nice 0 when both want a core.
WORKER_NICE = 5


def favour_loop(step: int = WORKER_NICE) -> Callable[[], None]:
    """From the event loop's thread, before the loop runs: every other thread of this
    process, now and started later, ``step`` nicer than this one (see the module
    docstring). Returns the undo of the hook for threads started later (threads already
    made nicer stay so: a nice value is lowered only with a privilege)."""
    if not hasattr(os, "setpriority") or step <= 0:
        return lambda: None
    loop_thread = threading.get_native_id()
    try:
        target = min(19, os.getpriority(os.PRIO_PROCESS, loop_thread) + step)
    except OSError:
        return lambda: None
    for name in _threads():
        if name != loop_thread:
            _nicer(name, target)

    def on_start(frame: FrameType, event: str, arg: Any) -> None:
        sys.setprofile(None)  # once per thread: the hook takes itself off at its first call
        _nicer(threading.get_native_id(), target)

    threading.setprofile(on_start)
    return lambda: threading.setprofile(None)


def _threads() -> list[int]:
    """This process's threads (their kernel ids), where ``/proc`` lists them."""
    try:
        return [int(name) for name in os.listdir("/proc/self/task")]
    except OSError:
        return []


def _nicer(thread: int, target: int) -> None:
    """Thread ``thread`` at nice ``target`` unless it is that nice already or nicer."""
    try:
        if os.getpriority(os.PRIO_PROCESS, thread) < target:
            os.setpriority(os.PRIO_PROCESS, thread, target)
    except OSError:  # gone meanwhile, or not allowed: it keeps its value
        pass
