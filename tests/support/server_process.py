"""``keepwarm serve`` as a real process on a free loopback port, for end-to-end tests.

The server is started with ``--port 0 --grpc-port 0``; its addresses are read from its
start-up output (the ``REST  http://...`` and ``gRPC  host:port`` lines), and readiness
from its ``ready at`` line: no sleeps.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import requests

START_TIMEOUT_S = 120.0
_URL = re.compile(r"REST  (https?://\S+)")
_GRPC = re.compile(r"gRPC  (\S+:\d+)")


class ServerProcess:
    def __init__(
        self, root: Path, *args: str, env: dict[str, str] | None = None, wait_ready: bool = True
    ) -> None:
        command = [sys.executable, "-m", "keepwarm", "serve", str(root), "--port", "0"]
        command += ["--grpc-port", "0", *args]
        environ = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
        src = str(Path(__file__).resolve().parents[2] / "src")
        environ["PYTHONPATH"] = os.pathsep.join(
            [src, str(Path(__file__).resolve().parents[1]), environ.get("PYTHONPATH", "")]
        )
        self.root = root
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=environ,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            line = self.wait_for_line(_URL.pattern)
            match = _URL.search(line)
            assert match is not None
            self.url = match.group(1)
            grpc_match = _GRPC.search(self.wait_for_line(_GRPC.pattern))
            assert grpc_match is not None
            self.grpc_address = grpc_match.group(1)  # host:port
            if wait_ready:
                self.wait_for_line("^ready at ")
        except BaseException:
            self.stop()
            raise

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append("<exited>")
            self._cond.notify_all()

    def wait_for_line(self, pattern: str, timeout: float = START_TIMEOUT_S) -> str:
        """The first output line matching ``pattern``; fails if the server exits first."""
        regex = re.compile(pattern)
        found: list[str] = []

        def seen() -> bool:
            found[:] = [line for line in self.lines if regex.search(line)]
            return bool(found) or "<exited>" in self.lines

        with self._cond:
            ok = self._cond.wait_for(seen, timeout)
        assert ok and found, f"no line matching {pattern!r}; output:\n" + "\n".join(self.lines)
        return found[0]

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.url + path, **{"timeout": 60, **kwargs})

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        data = body if isinstance(body, bytes | str) or body is None else orjson.dumps(body)
        return requests.post(self.url + path, data=data, timeout=60, **kwargs)

    def terminate(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


def start(root: Path, *args: str, **kwargs: Any) -> ServerProcess:
    return ServerProcess(root, *args, **kwargs)


__all__: Sequence[str] = ["ServerProcess", "start"]
