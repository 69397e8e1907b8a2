"""The connection's side of the lean path (``http/lean.py``): which requests take it, the
task that answers each, and the answer's end on the loop, whether the loop wrote it or the
thread that encoded it sent it (``http/answer_here.py``). ``OneWriteProtocol``
(``http/protocol.py``) is this with uvicorn's cycle for every other request.

Measured at concurrency 1 (MLP, v2 JSON, batching on, 2 vCPUs; ``bench/c1_floor.py``, 4
rounds of 2 s, load 1.6-4): above the direct call, keepwarm +0.33 ms (JSON and binary)
where ``bare-hop`` (the floor of a server whose model runs off the loop) is +0.26-0.30 and
``bare-inline`` +0.20-0.26; without HTTP, ``bench/c1_steps.py`` put the service's own cost
over a bare hop at +12 µs of loop CPU and +9 µs of the worker's per request. What is left
is mostly the hop itself. ``strace -f`` of one request: the next request, sent by the
client as soon as the worker's send reached it, is often read before the loop has ended
the one before (the hop's eventfd), so it is queued behind it (a pause and a resumption
of reading: two ``epoll_ctl``, batched by libuv through ``io_uring_enter``) and its hand-off
waits for that end.

Tried and rejected (``bench/ab.py`` against the version before, 6 rounds of 3 s each):

- starting that request at once when the answer before it was sent whole by the worker
  (the one before ended later, counted only): c=1 req/s 0.943x and 0.915x in two runs,
  CPU per request 1.11x and 1.16x; c=4 0.852x, CPU 1.46x (requests handed off one by one
  instead of gathered into a batch); c=4 came back to 0.97x (CPU 0.99x) when this was
  done only while no other lean request ran in the process, but c=1 stayed slower. The
  loop's end of the request before then runs while the worker runs the next, and the two
  take the interpreter lock from each other; ending it first, then handing off, is
  cheaper;
- queueing that request without pausing reading (no ``epoll_ctl``): c=1 req/s 0.951x, CPU
  1.04x; c=4 1.049x, 1.003x: nothing seen beyond the scatter.
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractContextManager, nullcontext
from time import perf_counter
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from keepwarm.http.answer_here import AnswerHere, SocketWriter
from keepwarm.http.lean import LeanApp, LeanCycle, lean_cycle, run


class LeanConnection(HttpToolsProtocol):
    """uvicorn's httptools protocol with the lean path (see the module docstring)."""

    def __init__(self, *args: Any, lean: LeanApp | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # the app's inference routes, for the lean path (``http/lean.py``), if any
        self._lean = lean if self.root_path == "" and self.limit_concurrency is None else None
        self.lean_requests = 0  # how many requests took the lean path
        self._writer: SocketWriter | None = None  # for answers sent off the loop
        self._writer_made = False

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._writer is not None:
            self._writer.close()

    def take_lean(self, before: RequestResponseCycle | None) -> bool:
        """On a request's headers: True when it takes the lean path (started now, or
        queued behind ``before``, the request before it, while that one is unanswered)."""
        app = self._lean
        parser = self.parser
        if (
            app is None
            or parser.get_method() != b"POST"
            or parser.get_http_version() != "1.1"
            or not parser.should_keep_alive()
        ):
            return False
        lean = lean_cycle(app, self.url, self.headers, perf_counter())
        if lean is None:
            return False
        self.cycle = lean  # type: ignore[assignment]
        self.lean_requests += 1
        if before is None or before.response_complete:
            self._start_lean(lean)
        else:  # pipelined: started once the one before is answered
            self.flow.pause_reading()
            self.pipeline.appendleft((lean, None))  # type: ignore[arg-type]
        return True

    def _start_lean(self, cycle: LeanCycle) -> None:
        """A lean request's task; its answer sent by the thread that encodes it where the
        connection allows (``http/answer_here.py``)."""
        if not self._writer_made:
            self._writer_made = True
            self._writer = SocketWriter.of(self.transport)
        default_headers = self.server_state.default_headers
        if self._writer is not None:
            cycle.here = AnswerHere(self._writer, self.transport, cycle, default_headers)
        assert self._lean is not None
        task = self.loop.create_task(run(self, self._lean, cycle, default_headers))
        self.tasks.add(task)
        task.add_done_callback(self._lean_done)

    def shutdown(self) -> None:
        """uvicorn's, under the writer's lock (see ``http/answer_here.py``)."""
        with self._locked():
            super().shutdown()

    def _locked(self) -> AbstractContextManager[object]:
        """The lock under which a lean answer is sent off the loop, if there is one."""
        writer = self._writer
        return writer.lock if writer is not None else nullcontext()

    def lean_answered(self, cycle: LeanCycle, data: bytes) -> None:
        """A lean request's answer, written unless its client is gone; then the
        connection goes on as after any answer (``on_response_complete``)."""
        if cycle.disconnected or self.transport.is_closing():
            return
        cycle.response_started = True
        if data:
            self.transport.write(data)
        cycle.response_complete = True
        if not cycle.keep_alive:  # the server shuts down
            self.transport.close()
        self.on_response_complete()

    def _lean_done(self, task: asyncio.Task[None]) -> None:
        """A lean request's task ended: one that raised (cancelled at the end of a
        graceful shutdown) has its connection closed, as uvicorn's cycle does."""
        self.tasks.discard(task)
        if task.cancelled():
            self.transport.close()
        elif (exc := task.exception()) is not None:
            self.logger.error("Exception in a lean request", exc_info=exc)
            self.transport.close()
