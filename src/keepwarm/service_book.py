"""The service's request book: how many inference requests are in flight (from any thread:
the event loop's, or the gRPC server's handler threads), whether the server is draining,
and per request its metrics and statistics, written once when it ends.

Written where the request ends, before its answer is sent: writing it from a callback
after the answer's step (``loop.call_soon`` from the event loop's requests) was tried and
measured slower, bench/ab.py MLP v2 JSON at 1 client, two runs of 6 interleaved rounds
against without: 0.89x and 0.95x the requests per second at 1.07x and 1.06x the CPU per
request."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, TypeVar

import numpy as np

from keepwarm.batching.serving import Holding, Queued, Ticket, begin, prepared
from keepwarm.errors import KeepwarmError, UnavailableError, escaped
from keepwarm.metrics import Metrics
from keepwarm.service_stats import Statistics, Timing
from keepwarm.signature import Signature

T = TypeVar("T")


class Gone(Exception):
    """A blocking request's client went away (it cancelled, or its deadline passed)
    before the request was answered: the answer would reach nobody."""


class Record:
    """One request as it runs: the version that answered (``label``) and its ``timing``.
    The block of ``RequestBook.track`` (a class, not a generator: it is on every request)."""

    __slots__ = ("_book", "_name", "_protocol", "label", "timing")

    def __init__(self, started: float, book: RequestBook, name: str, protocol: str) -> None:
        self.label = ""  # the version, once one answered
        self.timing = Timing(started)
        self._book = book
        self._name = name
        self._protocol = protocol

    def __enter__(self) -> Record:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        self._book.end(self, self._name, self._protocol, exc)

    def run(
        self,
        model: Any,
        deadline: float | None,
        lease: Holding,
        decode: Any,
        encode: Any,
        ticket: Ticket | None = None,
    ) -> Any:
        """Decode, predict and encode on leased ``model``; a ``Queued`` request when its
        batcher queued it (``finish`` ends it once its outputs are there)."""
        timing = self.timing
        inputs = self.decode(model, decode)
        try:
            outputs = begin(model, inputs, deadline, lease, ticket)
        except Exception:
            raise
        except BaseException as exc:  # ``sys.exit()`` in a model: this request's error,
            raise escaped(model.name, exc) from exc  # never a server thread's end
        timing.compute_infer = timing.lap()
        if isinstance(outputs, Queued):
            return outputs
        answer = encode(model.name, model.version, outputs)
        timing.compute_output = timing.lap()
        return answer

    def decode(self, model: Any, decode: Any) -> dict[str, np.ndarray]:
        """The request's inputs for leased ``model``: ``decode(model.signature)``."""
        timing = self.timing
        self.label = str(model.version)
        timing.queue = timing.lap()
        signature: Signature = model.signature
        inputs: dict[str, np.ndarray] = decode(signature)
        timing.compute_input = timing.lap()
        return inputs

    def finish(self, queued: Queued, outputs: dict[str, np.ndarray], encode: Any) -> Any:
        """The answer of a request that waited for its batch: the one its batch thread
        encoded (``answering``), else encoded here."""
        timing = self.timing
        timing.compute_infer += timing.lap()
        made = prepared(queued)
        if made is not None:
            answer, seconds = made
            timing.compute_infer -= seconds
            timing.compute_output = seconds
            return answer
        answer = encode(queued.name, queued.version, outputs)
        timing.compute_output = timing.lap()
        return answer

    @staticmethod
    def answering(name: str, version: int, encode: Any) -> Any:
        """A queued request's ``prepare`` (``batching.serving``): its answer, encoded on
        its batch thread, and the seconds that took (``finish`` counts them as output)."""

        def answer(outputs: dict[str, np.ndarray]) -> tuple[Any, float]:
            began = time.perf_counter()
            made = encode(name, version, outputs)
            return made, time.perf_counter() - began

        return answer


class RequestBook:
    """``track`` each inference request; ``drain`` then ``wait_idle`` at shutdown."""

    def __init__(self, metrics: Metrics, statistics: Statistics) -> None:
        self.metrics = metrics
        self.statistics = statistics
        self.draining = False
        self._lock = threading.Lock()
        self._in_flight = 0
        self._idle: asyncio.Event | None = None  # made on the loop, when draining begins
        self._loop: asyncio.AbstractEventLoop | None = None
        # Read at each scrape, not counted per request.
        metrics.in_flight.set_function(lambda: self._in_flight)

    def track(self, name: str, protocol: str) -> Record:
        """A context manager: count the request in flight while its block runs (refused
        when draining) and record how it ended: OK, its error's code, or CANCELLED (its
        client went away)."""
        record = Record(time.perf_counter(), self, name, protocol)
        with self._lock:
            self._in_flight += 1
        if self.draining:
            refused = UnavailableError("the server is shutting down; retry on another server")
            self.end(record, name, protocol, refused)
            raise refused
        return record

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def end(self, record: Record, name: str, protocol: str, exc: BaseException | None) -> None:
        """The request of ``record`` ended, with ``exc`` (None: answered)."""
        if exc is None:
            code = "OK"
        elif isinstance(exc, KeepwarmError):
            code = exc.code.value
        elif isinstance(exc, asyncio.CancelledError | Gone):
            code = "CANCELLED"  # the client went away (or its deadline passed)
        else:
            code = "OK"
        elapsed = time.perf_counter() - record.timing.started
        label = record.label
        if label:  # the request reached a version
            self.metrics.request(name, label, protocol, code, elapsed)
            self.statistics.record(name, label, elapsed, record.timing if code == "OK" else None)
        else:  # names not served are not labels: clients must not grow the series
            self.metrics.request("", "", protocol, code, elapsed)
        with self._lock:
            self._in_flight -= 1
            idle = self._in_flight == 0 and self._idle is not None
        if idle:
            self._set_idle()

    def drain(self) -> None:
        """From now on new requests are refused (call on the event loop)."""
        self._loop = asyncio.get_running_loop()
        self._idle = asyncio.Event()
        self.draining = True
        with self._lock:
            if self._in_flight == 0:
                self._idle.set()

    def _set_idle(self) -> None:
        assert self._idle is not None and self._loop is not None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._idle.set()
        else:
            self._loop.call_soon_threadsafe(self._idle.set)

    async def wait_idle(self, timeout: float) -> bool:
        """After ``drain``: wait until no request is in flight; False on timeout."""
        assert self._idle is not None, "drain first"
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True
