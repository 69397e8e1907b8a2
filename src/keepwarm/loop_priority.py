"""The event loop's thread ahead of the process's native threads for a core.

Under load the two cores are shared by the model's native threads (a TensorFlow batch
uses them all, holding no interpreter lock), the threads decoding large bodies and the
event loop; at equal priority a woken loop waits its turn for a core, and every request
that needs the loop waits with it, a refusal first: its 503 is nothing but loop work.
``favour_loop()``, called on the loop's thread, starts a thread that every
``WALK_SECONDS`` puts each native thread of the process (one ``threading`` does not
know, at two walks in a row: TensorFlow's pools, made when a model loads, gRPC's and
libuv's) ``WORKER_NICE`` steps nicer than the loop (Linux: a thread's nice value is its
own), once. A woken loop
then takes a core from them at once.

Python's threads keep the loop's value: a thread holding the interpreter lock,
preempted by the loop that then waits for that lock, would stall both (all threads
nicer measured MLP v2 at 32 clients 0.69x the requests per second at 1.44x the CPU per
request; native threads only: 1.01x at 0.99x). A thread started with ``_thread`` and
never seen by ``threading`` counts as native.

The cost: on a machine shared with other processes, the model's native threads yield
to theirs as well as to the loop. Lowering a nice value needs a privilege the server
does not ask for, so the loop's own is never touched; where nice values cannot be set,
nothing changes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

#: How much nicer than the event loop's thread native threads run: nice 5 weighs about
#: a third of nice 0 when both want a core.
WORKER_NICE = 5
#: How often the process's threads are looked at for new native ones.
WALK_SECONDS = 1.0


def favour_loop(step: int = WORKER_NICE, every: float = WALK_SECONDS) -> Callable[[], None]:
    """From the event loop's thread: native threads of this process, now and made later,
    ``step`` nicer than this one (see the module docstring). Returns the stop of the
    thread that looks for them (threads made nicer stay so)."""
    if not hasattr(os, "setpriority") or step <= 0 or not os.path.isdir("/proc/self/task"):
        return lambda: None
    loop_thread = threading.get_native_id()
    try:
        target = min(19, os.getpriority(os.PRIO_PROCESS, loop_thread) + step)
    except OSError:
        return lambda: None
    stop = threading.Event()
    done = {loop_thread}  # made nicer, or a Python thread's: not looked at again
    unknown: set[int] = set()  # not Python's at the last walk: made nicer if still not

    def walk() -> None:
        nonlocal unknown
        while True:
            try:
                threads = {int(name) for name in os.listdir("/proc/self/task")}
            except OSError:
                return
            python = {t.native_id for t in threading.enumerate()}
            for thread in threads - done:
                if thread in python:
                    done.add(thread)
                elif thread in unknown:  # twice: not a Python thread just starting
                    done.add(thread)
                    _nicer(thread, target)
            unknown = threads - done - python
            done.intersection_update(threads)  # gone ones leave (their ids come back)
            if stop.wait(every):
                return

    threading.Thread(target=walk, name="keepwarm-favour-loop", daemon=True).start()
    return stop.set


def _nicer(thread: int, target: int) -> None:
    """Thread ``thread`` at nice ``target`` unless it is that nice already or nicer."""
    try:
        if os.getpriority(os.PRIO_PROCESS, thread) < target:
            os.setpriority(os.PRIO_PROCESS, thread, target)
    except OSError:  # gone meanwhile, or not allowed: it keeps its value
        pass
