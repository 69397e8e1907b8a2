"""The connection's side of the lean path (``http/lean.py``): which requests take it, the
task that answers each, and the answer's end on the loop, whether the loop wrote it or the
thread that encoded it sent it (``http/answer_here.py``). ``OneWriteProtocol``
(``http/protocol.py``) is this with uvicorn's cycle for every other request.
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
