"""What a server process changes in the interpreter for its hot path.

The GIL switch interval: a thread that wants the GIL waits until its holder lets go,
and a holder busy with Python (the event loop parsing and answering requests, or a
batch thread in TensorFlow's call overhead) is asked to let go only after the switch
interval, 5 ms by default. A batch whose model call releases and retakes the GIL a few
times then waits several intervals behind the event loop, and the event loop behind the
batch threads: at 32 clients on the MLP, most of a request's latency. 0.5 ms bounds
each wait while keeping switches rare next to the work between them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

SWITCH_INTERVAL_SECONDS = 0.0005


def tune_interpreter() -> Callable[[], None]:
    """Set the switch interval for serving; returns the function that restores it."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)

    def restore() -> None:
        sys.setswitchinterval(before)

    return restore
