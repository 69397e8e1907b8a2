"""The worker process: ``main([CONTROL_FD, LIFELINE_FD])`` in a new interpreter.

A fresh interpreter (never a fork of the server, which may hold TensorFlow and threads).
It loads models from their ``LoadDescription`` (never reading the repository itself),
then answers one message at a time on its control connection until told to stop. It
exits when the server goes away: the control connection reaches its end, or, while a call
runs, the lifeline pipe (whose only writer is the server) does.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import traceback
from multiprocessing.connection import Connection
from typing import Any

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


class Worker:
    """The models of one worker process and its shared buffer."""

    def __init__(self, conn: Connection, sock: socket.socket, start: Start) -> None:
        self.conn, self.sock = conn, sock
        self.hook = start.hook
        self.buffer = receive_buffer(sock)
        self.models: dict[str, Any] = {}

    def serve(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                return  # the server went away
            if isinstance(message, Stop):
                for key in list(self.models):
                    self._unload(Unload(key))
                return
            try:
                reply: Any = self._handle(message)
            except BaseException as exc:  # every failure goes back typed, the worker lives
                reply = _failed(exc)
            self.conn.send(reply)
            if isinstance(reply, Result) and reply.buffer_follows:
                send_buffer(self.sock, self.buffer)

    def _handle(self, message: Any) -> Any:
        if isinstance(message, Predict):
            return self._predict(message)
        if isinstance(message, Load):
            return self._load(message)
        if isinstance(message, Unload):
            return self._unload(message)
        raise TypeError(f"a worker cannot handle {type(message).__name__}")

    def _predict(self, message: Predict) -> Result:
        if message.buffer_follows:
            self._replace_buffer(receive_buffer(self.sock))
        model = self.models.get(message.key)
        if model is None:
            raise KeyError(f"no model {message.key!r} is loaded in this worker")
        inputs = {ref.name: self.buffer.view(ref) for ref in message.inputs}
        outputs = model.predict(inputs)
        end = max((ref.offset + ref.nbytes for ref in message.inputs), default=0)
        refs, needed = layout(outputs, end)
        follows = needed > self.buffer.size
        if follows:  # the inputs are read: the answer goes into a larger buffer of its own
            self._replace_buffer(SharedBuffer(grown(self.buffer.size, needed)))
        self.buffer.write(refs, outputs)
        return Result(refs, buffer_follows=follows)

    def _replace_buffer(self, buffer: SharedBuffer) -> None:
        old, self.buffer = self.buffer, buffer
        old.close()

    def _load(self, message: Load) -> Loaded:
        from keepwarm.loading import RuntimeSpec

        figures = self._hook("before_load", message.key)
        spec = RuntimeSpec(message.description)  # no batching, no workers: runs here
        model = spec.load()
        self.models[message.key] = model
        figures.update(self._hook("after_load", message.key))
        return Loaded(
            message.key,
            model.signature,
            int(model.nbytes),
            str(model.nbytes_source),
            spec.format,
            figures,
        )

    def _unload(self, message: Unload) -> Unloaded:
        figures = self._hook("before_unload", message.key)
        model = self.models.pop(message.key, None)
        if model is not None:
            model.close()
            del model
        figures.update(self._hook("after_unload", message.key))
        return Unloaded(message.key, figures)

    def _hook(self, event: str, key: str) -> dict[str, dict[str, float]]:
        if self.hook is None:
            return {}
        found = self.hook(event, key)
        return {} if found is None else {event: dict(found)}


def _failed(exc: BaseException) -> Failed:
    """What the server needs to raise ``exc`` again. A builtin's one text argument goes as
    it is: ``str(KeyError('k'))`` is ``"'k'"``, and KeyError("'k'") came back quoted twice."""
    one_text = len(exc.args) == 1 and isinstance(exc.args[0], str)
    plain = type(exc).__module__ == "builtins" and one_text
    return Failed(
        type(exc).__name__,
        type(exc).__module__,
        exc.args[0] if plain else str(exc),
        "".join(traceback.format_exception(exc))[-4000:],
        getattr(exc, "format", None),
    )


def _watch_lifeline(fd: int) -> None:
    """End this process when the server's end of the lifeline closes (it exited)."""
    while True:
        try:
            if not os.read(fd, 1):
                break
        except InterruptedError:
            continue
        except OSError:
            break
    os._exit(0)


def main(argv: list[str]) -> int:
    control, lifeline = int(argv[0]), int(argv[1])
    threading.Thread(
        target=_watch_lifeline, args=(lifeline,), name="keepwarm-lifeline", daemon=True
    ).start()
    conn = Connection(control)
    sock = socket.socket(fileno=os.dup(control))
    start = conn.recv()
    if not isinstance(start, Start):
        return 2
    sys.path[:] = list(start.sys_path)
    worker = Worker(conn, sock, start)
    conn.send(Started(os.getpid()))
    worker.serve()
    return 0


__all__ = ["Figures", "Worker", "main"]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
