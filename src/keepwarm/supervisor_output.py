"""What the supervisor of several server processes prints: the processes' own start-up
lines, the addresses once (every process serves the same), each process's pid and
readiness, ``ready at`` once every process is ready, deaths and restarts. JSON log lines
pass through unchanged (one object a line); other lines are tagged with their process."""

from __future__ import annotations

import re
import threading
import time
from typing import TextIO

_ONCE = re.compile(r"^(keepwarm serving |  (REST|also|gRPC)  )")
_READY = re.compile(r"^ready at ")


class Output:
    def __init__(self, out: TextIO, count: int) -> None:
        self.out = out
        self.count = count
        self.ready: set[int] = set()
        self.all_ready_once = False
        self._said: set[str] = set()
        self._lock = threading.Lock()

    def say(self, line: str) -> None:
        with self._lock:
            print(line, file=self.out, flush=True)

    def started(self, index: int, pid: int) -> None:
        self.say(f"process {index}: started (pid {pid})")

    def line(self, index: int, pid: int, line: str) -> None:
        """One line of process ``index``'s output."""
        if _ONCE.match(line):
            with self._lock:
                if line in self._said:
                    return
                self._said.add(line)
            self.say(line)
        elif _READY.match(line):
            self.say(f"process {index}: ready (pid {pid})")
            with self._lock:
                self.ready.add(index)
                first = len(self.ready) == self.count and not self.all_ready_once
                self.all_ready_once = self.all_ready_once or first
            if first:
                self.say(f"ready at {time.strftime('%H:%M:%S')} ({self.count} processes)")
        elif line.startswith("{"):
            self.say(line)
        else:
            self.say(f"[process {index}] {line}")

    def died(self, index: int, pid: int, code: int, backoff: float) -> None:
        with self._lock:
            self.ready.discard(index)
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        self.say(f"process {index}: pid {pid} died ({how}); restarting in {backoff:g} s")

    def stopped(self) -> None:
        self.say("stopped")
