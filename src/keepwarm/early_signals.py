"""SIGINT and SIGTERM while ``keepwarm serve`` starts, before the server (or the supervisor)
puts its own handlers in place.

Until then nothing is served, so a signal ends the start: SIGINT as Python's Ctrl-C
(``KeyboardInterrupt``: "interrupted", exit 130), SIGTERM as a drained server (``Terminated``:
"stopped", exit 0). Python raises the signal's exception in whatever the main thread is
running then, which may be a library's import or start-up code that catches
``BaseException`` and goes on: the signal is lost and the server starts anyway (one
fresh-clone test run saw a SIGINT sent around the first loads leave the server running).
So each signal is recorded before its exception is raised; where the server puts its own
handlers in place it calls :func:`raise_pending`, which raises a recorded signal's exception
again, before anything has started. A second Ctrl-C during the start ends the process at
once, whatever the first one became.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from keepwarm.errors import KeepwarmError

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(BaseException):
    """SIGTERM before the server's own handlers are in place (a BaseException, as
    KeyboardInterrupt: start-up code that catches Exception lets it through)."""


def terminated(signum: int, frame: Any) -> None:
    """A SIGTERM handler raising :class:`Terminated` (commands other than ``serve``)."""
    raise Terminated


_received: list[int] = []
_stderr: list[int] = []  # standard error as it was at ``install`` (the start redirects fd 2)
_holding: list[bool] = [False]  # ``hold``: record, do not raise


def _raise_for(signum: int) -> None:
    raise KeyboardInterrupt if signum == signal.SIGINT else Terminated


def _on_signal(signum: int, frame: Any) -> None:
    if signum == signal.SIGINT and signal.SIGINT in _received:  # Ctrl-C again: now
        os.write(_stderr[0] if _stderr else 2, b"interrupted\n")
        os._exit(130)
    _received.append(signum)
    if not _holding[0]:
        _raise_for(signum)


def install() -> Callable[[], None]:
    """Record and raise SIGINT and SIGTERM (the main thread only); returns ``restore``,
    which puts the previous handlers back and forgets what was received."""
    _received.clear()
    _holding[0] = False
    _stderr[:] = [os.dup(2)]
    previous = {signum: signal.signal(signum, _on_signal) for signum in SIGNALS}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _received.clear()
        _holding[0] = False
        os.close(_stderr.pop())

    return restore


def hold() -> None:
    """From now on a signal is only recorded (``raise_pending`` raises it): for code that
    must not be interrupted midway, next an event loop's set-up. A SIGTERM raised inside
    uvloop's signal set-up (``asyncio.Runner``'s first step) left the loop running and
    unclosable: exit 1 with three tracebacks, where the start ends with 0 ("stopped")."""
    _holding[0] = True


def raise_pending() -> None:
    """Raise the first recorded signal's exception (one that start-up code swallowed), if
    any: called where the server's own handlers have just been put in place."""
    if _received:
        _raise_for(_received[0])


def exit_code(run: Callable[[], int], *, terminated: tuple[int, str] = (0, "stopped")) -> int:
    """``run()``'s exit code, or the one for what ended it, said in one line: a
    ``KeepwarmError`` (``error: ...``, 2), Ctrl-C (``interrupted``, 130) or SIGTERM
    (``terminated``: the code and the word; a server's start: 0, ``stopped``)."""
    try:
        return run()
    except KeepwarmError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Terminated:
        code, word = terminated
        print(word, file=sys.stderr)
        return code


__all__ = ["SIGNALS", "Terminated", "exit_code", "hold", "install", "raise_pending", "terminated"]
