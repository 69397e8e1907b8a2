"""What ``keepwarm serve`` prints while it starts: a line per load, and ``ready at`` once
the server is first ready; and how an address is written."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable
from typing import TextIO

from keepwarm.core.events import Event
from keepwarm.core.ids import ModelId
from keepwarm.core.states import State


class Progress:
    """A line per load (started, READY with its time, FAILED with its reason), and one
    line when the server first becomes ready, after the line of every load it waited for:
    events come on their own thread, after the state changed, so the server could be
    ready while a READY line was still to come (``ready at`` was printed above it)."""

    def __init__(self, out: TextIO, ready: Callable[[], bool]) -> None:
        self.out = out
        self.ready = ready
        self.started: dict[ModelId, float] = {}
        self.said_ready = False
        self.lock = threading.Lock()

    def on_event(self, event: Event) -> None:
        key = event.key
        if event.kind != "state" or not isinstance(key, ModelId):
            return
        what = f"{key.name} version {key.version}"
        if event.state is State.LOADING:
            self.started[key] = event.time
            say(self.out, f"loading {what} ...")
        elif event.state in (State.READY, State.FAILED):
            took = event.time - self.started.pop(key, event.time)
            if event.state is State.READY:
                note = f" ({event.reason})" if event.reason else ""
                say(self.out, f"loaded {what} in {took:.1f} s{note}")
            else:
                say(self.out, f"FAILED {what} after {took:.1f} s: {event.reason}")
        elif event.state not in (State.NEW, State.WARMING):
            self.started.pop(key, None)  # a load that ended otherwise (its files gone)
        self.check()

    def check(self) -> None:
        with self.lock:
            if self.said_ready or self.started or not self.ready():
                return
            self.said_ready = True
        say(self.out, f"ready at {time.strftime('%H:%M:%S')}")


def say(out: TextIO, line: str) -> None:
    print(line, file=out, flush=True)


def host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


__all__ = ["Progress", "host_for_url", "is_loopback", "say"]
