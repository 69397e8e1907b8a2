"""One worker process, seen from the server: start it, call it, stop it, notice it die.

A worker is a fresh interpreter (``python -m keepwarm.workers.process``, the "spawn" way:
nothing of the server's memory, threads or TensorFlow is inherited), started with the
server's import path. It gets three descriptors: its end of the control socket, the read
end of a lifeline pipe (it exits when the server does), and a pipe for its stdout and
stderr, which a thread reads (``keepwarm.workers.output``): at its end (the worker exited)
it calls ``on_exit``, which is how a death is noticed, even between calls.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from typing import Any, NoReturn

import numpy as np

from keepwarm.errors import ModelLoadError, ResourceExhaustedError
from keepwarm.settings import WorkerSettings
from keepwarm.workers.buffer import SharedBuffer, grown, layout, receive_buffer, send_buffer
from keepwarm.workers.messages import (
    Failed,
    Figures,
    Load,
    Loaded,
    Predict,
    Result,
    Start,
    Started,
    Stop,
    Unload,
    Unloaded,
)
from keepwarm.workers.output import WorkerOutput
from keepwarm.workers.remote import rebuilt

# The server's import path first (as given: no environment is read or changed), then the
# worker's loop. ``-c``, not ``-m``: nothing of the caller's directory or __main__ runs.
_BOOT = (
    "import json, sys; sys.path[:0] = json.loads(sys.argv[1]); "
    "from keepwarm.workers.process import main; sys.exit(main(sys.argv[2:]))"
)


class WorkerDied(Exception):
    """The worker process ended during a call (the caller turns it into UnavailableError)."""

    def __init__(self, worker: WorkerProcess) -> None:
        super().__init__(worker.death())
        self.worker = worker


class Unanswered(Exception):
    """The worker gave no answer within the call's time limit (it is still running)."""


class WorkerProcess:
    """A started worker. ``call``-like methods are used by one thread at a time."""

    def __init__(
        self,
        worker_id: int,
        settings: WorkerSettings,
        *,
        hook: Any = None,
        on_exit: Callable[[WorkerProcess], None] | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.settings = settings
        self.stopping = False
        self.figures: dict[str, Mapping[str, float]] = {}
        self._on_exit = on_exit
        self._ended = False  # the server's ends are closed
        self._end_lock = threading.Lock()
        ours, theirs = socket.socketpair()
        life_read, self._lifeline = os.pipe()
        out_read, out_write = os.pipe()
        try:
            fds = (theirs.fileno(), life_read)
            self.popen = subprocess.Popen(
                [sys.executable, "-c", _BOOT, json.dumps(_import_path()), *map(str, fds)],
                pass_fds=(theirs.fileno(), life_read),
                stdin=subprocess.DEVNULL,
                stdout=out_write,
                stderr=out_write,
            )
        except BaseException:
            for fd in (self._lifeline, out_read):
                os.close(fd)
            ours.close()
            raise
        finally:
            theirs.close()
            os.close(life_read)
            os.close(out_write)
        self.pid = self.popen.pid
        self.conn = Connection(ours.detach())
        self.sock = socket.socket(fileno=os.dup(self.conn.fileno()))
        self.buffer = SharedBuffer(settings.buffer_bytes)
        self.output = WorkerOutput(
            out_read, f"[keepwarm worker {worker_id}] ", f"keepwarm-worker-{worker_id}",
            self._output_ended,
        )  # fmt: skip
        try:
            self.conn.send(Start(worker_id, tuple(_import_path()), hook))
            send_buffer(self.sock, self.buffer)
        except BaseException as exc:
            self._failed_start(exc)

    def wait_started(self) -> None:
        """Wait for the worker's first answer (``start_timeout``); ModelLoadError with its
        output when it does not come. Separate from ``__init__``, so that several workers
        start at once."""
        try:
            if not self.conn.poll(self.settings.start_timeout):
                raise TimeoutError(f"no answer within {self.settings.start_timeout:g} s")
            started = self.conn.recv()
            if not isinstance(started, Started):
                raise ConnectionError(f"unexpected first message {started!r}")
        except BaseException as exc:
            self._failed_start(exc)

    def _failed_start(self, exc: BaseException) -> NoReturn:
        self.kill()
        raise ModelLoadError(
            f"worker process {self.pid} did not start: {type(exc).__name__}: {exc}"
            f"{self.output.tail_text()}"
        ) from exc

    # ------------------------------------------------------------------ calls

    def load(self, key: str, description: Any, timeout: float | None = None) -> Loaded:
        """Load ``description`` as ``key``; ``Unanswered`` after ``timeout`` seconds (the
        worker still loading: the caller decides its fate)."""
        reply = self._call(Load(key, description), timeout=timeout)
        assert isinstance(reply, Loaded)
        self.figures.update(reply.figures)
        return reply

    def unload(self, key: str, timeout: float | None = None) -> Figures:
        reply = self._call(Unload(key), timeout=timeout)
        assert isinstance(reply, Unloaded)
        self.figures.update(reply.figures)
        return reply.figures

    def predict(self, key: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        refs, needed = layout(inputs)
        follows = needed > self.buffer.size
        if follows:
            if needed > self.settings.max_buffer_bytes:
                raise ResourceExhaustedError(
                    f"the inputs take {needed} bytes, over the worker's shared buffer limit "
                    f"workers.max_buffer_bytes={self.settings.max_buffer_bytes}: send fewer "
                    "rows per request, or raise the limit"
                )
            self._replace_buffer(SharedBuffer(grown(self.buffer.size, needed)))
        self.buffer.write(refs, inputs)
        reply = self._call(Predict(key, refs, follows), buffer=follows)
        assert isinstance(reply, Result)
        if reply.buffer_follows:
            try:
                self._replace_buffer(receive_buffer(self.sock))
            except OSError as exc:
                raise WorkerDied(self) from exc
        return {ref.name: self.buffer.copy_out(ref) for ref in reply.outputs}

    def _call(self, message: Any, *, buffer: bool = False, timeout: float | None = None) -> Any:
        try:
            self.conn.send(message)
            if buffer:
                send_buffer(self.sock, self.buffer)
            if timeout is not None and not self.conn.poll(timeout):
                raise Unanswered(f"no answer within {timeout:g} s")
            reply = self.conn.recv()
        except (EOFError, OSError) as exc:
            raise WorkerDied(self) from exc
        if isinstance(reply, Failed):
            raise rebuilt(reply)
        return reply

    def _replace_buffer(self, buffer: SharedBuffer) -> None:
        old, self.buffer = self.buffer, buffer
        old.close()

    # ------------------------------------------------------------------ ending

    def stop(self, timeout: float) -> None:
        """Ask the worker to unload its models and exit; kill it after ``timeout``."""
        self.stopping = True
        with contextlib.suppress(OSError):  # already gone
            self.conn.send(Stop())
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
        self._finish()

    def kill(self) -> None:
        self.stopping = True
        self.popen.kill()
        self._finish()

    def _finish(self) -> None:
        self.popen.wait()
        self.output.join()
        with self._end_lock:  # once: a descriptor number closed twice may be another's
            if self._ended:
                return
            self._ended = True
        for close in (self.conn.close, self.sock.close, self.buffer.close, self._close_lifeline):
            with contextlib.suppress(OSError):
                close()

    def _close_lifeline(self) -> None:
        os.close(self._lifeline)

    def _output_ended(self) -> None:
        """On the output thread, once the worker's output pipe ended."""
        self.popen.wait()
        if self._on_exit is not None and not self.stopping:
            self._on_exit(self)

    def exit_code(self, timeout: float = 5.0) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def death(self) -> str:
        """How the worker ended, for messages: its exit code or signal, and its last output."""
        code = self.exit_code()
        self.output.drained.wait(5.0)  # its output read to the end (bounded: a child of the
        # worker may hold the pipe open)
        how = (
            "is still running"
            if code is None
            else f"was killed by signal {-code}"
            if code < 0
            else f"exited with code {code}"
        )
        return f"worker process {self.pid} {how}{self.output.tail_text()}"


def _import_path() -> list[str]:
    return [os.getcwd() if entry == "" else entry for entry in sys.path]
