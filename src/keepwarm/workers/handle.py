"""One worker process, seen from the server: start it, call it, stop it, notice it die.

A worker is a fresh interpreter (``python -m keepwarm.workers.process``, the "spawn" way:
nothing of the server's memory, threads or TensorFlow is inherited), started with the
server's import path. It gets three descriptors: its end of the control socket, the read
end of a lifeline pipe (it exits when the server does), and a pipe for its stdout and
stderr. A thread per worker reads that pipe, forwards it to the server's stderr, keeps its
tail (for the error of a worker that dies), and at its end (the worker exited) calls
``on_exit``: that thread is how a death is noticed, even between calls.
"""

from __future__ import annotations

import builtins
import collections
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

from keepwarm import errors
from keepwarm.errors import KeepwarmError, ModelLoadError, ResourceExhaustedError
from keepwarm.logs import is_native_chatter
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

# The server's import path first (as given: no environment is read or changed), then the
# worker's loop. ``-c``, not ``-m``: nothing of the caller's directory or __main__ runs.
_BOOT = (
    "import json, sys; sys.path[:0] = json.loads(sys.argv[1]); "
    "from keepwarm.workers.process import main; sys.exit(main(sys.argv[2:]))"
)
_TAIL = 4096  # bytes of a worker's output kept for the error when it dies


class WorkerDied(Exception):
    """The worker process ended during a call (the caller turns it into UnavailableError)."""

    def __init__(self, worker: WorkerProcess) -> None:
        super().__init__(worker.death())
        self.worker = worker


class RemoteError(Exception):
    """An exception raised in a worker whose type is not a builtin or keepwarm's own:
    ``type_name`` is the name of its type there."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name


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
        self._tail: collections.deque[bytes] = collections.deque()
        self._tail_bytes = 0
        self._tail_lock = threading.Lock()
        self._drained = threading.Event()  # the output pipe reached its end
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
        self._reader = threading.Thread(
            target=self._read_output, args=(out_read,), name=f"keepwarm-worker-{worker_id}",
            daemon=True,
        )  # fmt: skip
        self._reader.start()
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
            f"{self._tail_text()}"
        ) from exc

    # ------------------------------------------------------------------ calls

    def load(self, key: str, description: Any) -> Loaded:
        reply = self._call(Load(key, description))
        assert isinstance(reply, Loaded)
        self.figures.update(reply.figures)
        return reply

    def unload(self, key: str) -> Figures:
        reply = self._call(Unload(key))
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

    def _call(self, message: Any, *, buffer: bool = False) -> Any:
        try:
            self.conn.send(message)
            if buffer:
                send_buffer(self.sock, self.buffer)
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
        if threading.current_thread() is not self._reader:
            self._reader.join()
        self._close_ends()

    def _close_ends(self) -> None:
        for close in (self.conn.close, self.sock.close, self.buffer.close, self._close_lifeline):
            with contextlib.suppress(OSError):  # closed already
                close()

    def _close_lifeline(self) -> None:
        os.close(self._lifeline)

    def exit_code(self, timeout: float = 5.0) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def death(self) -> str:
        """How the worker ended, for messages: its exit code or signal, and its last output."""
        code = self.exit_code()
        self._drained.wait(5.0)  # its output read to the end (bounded: a child of the
        # worker may hold the pipe open)
        how = (
            "is still running"
            if code is None
            else f"was killed by signal {-code}"
            if code < 0
            else f"exited with code {code}"
        )
        return f"worker process {self.pid} {how}{self._tail_text()}"

    def tail(self) -> str:
        with self._tail_lock:
            return b"".join(self._tail).decode("utf-8", "replace")

    def _tail_text(self) -> str:
        text = self.tail().strip()
        return f"; its last output: {text[-1000:]}" if text else ""

    def _read_output(self, fd: int) -> None:
        prefix = f"[keepwarm worker {self.worker_id}] ".encode()
        pending = b""
        try:
            while chunk := os.read(fd, 65536):
                *lines, pending = (pending + chunk).split(b"\n")
                self._forward(prefix, lines)
            if pending:
                self._forward(prefix, [pending])
        except OSError:
            pass
        finally:
            os.close(fd)
            self._drained.set()
        self.popen.wait()
        if self._on_exit is not None and not self.stopping:
            self._on_exit(self)

    def _forward(self, prefix: bytes, lines: list[bytes]) -> None:
        """Keep whole lines in the tail and pass them to stderr, each with the worker's
        prefix; native libraries' start-up chatter is dropped, as the server drops its own."""
        kept = b"".join(line + b"\n" for line in lines if not is_native_chatter(line))
        if not kept:
            return
        with self._tail_lock:
            self._tail.append(kept)
            self._tail_bytes += len(kept)
            while self._tail_bytes - len(self._tail[0]) >= _TAIL:
                self._tail_bytes -= len(self._tail.popleft())
        text = b"".join(prefix + line + b"\n" for line in kept.splitlines())
        with contextlib.suppress(OSError, ValueError):  # no stderr (closed at exit)
            sys.stderr.write(text.decode("utf-8", "replace"))


def rebuilt(failed: Failed) -> Exception:
    """The exception a worker reported, as its own type where that is keepwarm's or a
    builtin, else a ``RemoteError`` carrying its type's name; the worker's traceback is
    attached as a note."""
    exc: Exception
    home = errors if failed.module == "keepwarm.errors" else builtins
    kind = getattr(home, failed.type_name, None)
    if isinstance(kind, type) and issubclass(kind, ModelLoadError):
        exc = kind(failed.message, format=failed.format)
    elif isinstance(kind, type) and issubclass(kind, KeepwarmError):
        exc = kind(failed.message)
    elif failed.module == "builtins" and isinstance(kind, type) and issubclass(kind, Exception):
        try:
            exc = kind(failed.message)
        except TypeError:
            exc = RemoteError(failed.type_name, failed.message)
    else:
        exc = RemoteError(failed.type_name, failed.message)
    if failed.traceback:
        exc.add_note(f"in the worker process:\n{failed.traceback}")
    return exc


def _import_path() -> list[str]:
    return [os.getcwd() if entry == "" else entry for entry in sys.path]
