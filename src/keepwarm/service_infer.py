"""The inference request path of ``InferenceService``: one request from its lease to its
answer, on an event loop (``infer``) or on its caller's thread (``infer_blocking``).

On the event loop the lease is taken without blocking. A request whose inputs were
decoded already (``decoded=True``: decoded by the transport on the loop, as cheap there;
``decode`` may still build them against the signature, once: it is asked twice)
for a batched model that is gathering a batch is queued from the loop itself
(``batching.serving.submit``), unless a large input must first be converted to its
input's dtype (``as_is``): its batch runs on a batch thread, and the loop awaits the
outcome through callbacks, one hop per batch rather than one per request. Any other
request hops to a worker thread, which decodes, predicts (running the batch itself when
its model is idle) and encodes.

A request that waits for its batch on the loop (queued from there, or by its worker
thread) has its answer encoded by the batch thread that runs it, as a worker thread
encodes with batching off (``batching.serving``'s ``prepare``), so that the loop only
writes the bytes; one whose encoding raises there is encoded again on the loop, which
raises as before. Why: ``py-spy --gil`` on the served MLP at 4 clients, batching on,
found the loop encoding (``Record.finish``) in 3.1% of all samples, work that batching
off does on its worker. Measured against the version before (two servers, MLP, batching
on, ``bench/paired_load.py`` alternating them in 100 ms phases, 8 rounds of 3 s, load
1.4-2): v2 JSON at 4 clients 1.011x req/s, p50 -0.011 ms, server CPU per request 0.993x,
the loop's 0.931x; at 8 clients 1.028x, -0.218 ms, 0.970x, 0.926x; at 1 client (not this
path) 1.010x, 0.975x; TF Serving at 4 clients 0.999x, +0.005 ms, 1.007x, loop 0.963x; v2
at 4 clients again (12 rounds, load 4): 0.998x, +0.040 ms, 1.044x, loop 0.948x. So the
work moved off the loop (its CPU per request 0.93-0.96x in every run) rather than away,
and at 4 clients req/s and p50 do not move beyond the noise. ``bench/ab.py`` (``wrk``
rounds) scattered too much to say more: 1.197x then 0.764x req/s at 4 clients.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from typing import Any, TypeVar

import numpy as np

from keepwarm.batching.registry import Admission, refuse_when_full
from keepwarm.batching.serving import (
    Holding,
    Queued,
    Ticket,
    abandon,
    admitted,
    answer_there,
    finish,
    gathering,
    submit,
)
from keepwarm.hop import Job
from keepwarm.service_blocking import Call, Slots, wait_queued
from keepwarm.service_book import Gone, Record, RequestBook
from keepwarm.service_errors import Scrubber
from keepwarm.service_leases import Held, Leases, check_deadline
from keepwarm.signature import Signature

T = TypeVar("T")

#: An input larger than this that is not of its input's dtype (FP64 sent to an FP32
#: input) is converted on a worker thread, not on the event loop: converting is O(size).
LOOP_CONVERT_BYTES = 64 * 1024
Decode = Callable[[Signature], dict[str, np.ndarray]]
Encode = Callable[[str, int, dict[str, np.ndarray]], T]


class Requests:
    """See the module docstring. ``slots`` bounds the requests run on their callers'
    threads at once."""

    def __init__(
        self,
        leases: Leases,
        book: RequestBook,
        scrubber: Scrubber,
        slots: Slots,
        default_timeout: float | None,
    ) -> None:
        self._leases = leases
        self._book = book
        self._scrubber = scrubber
        self._slots = slots
        self._default_timeout = default_timeout

    async def infer(
        self,
        name: str,
        version: str | None,
        decode: Decode,
        encode: Encode[T],
        *,
        protocol: str,
        timeout: float | None = None,
        disconnected: Callable[[], Awaitable[None]] | None = None,
        decoded: bool = False,
    ) -> T:
        """Run one request: lease the version, ``decode`` the inputs against its signature,
        predict, ``encode`` the outputs; the model never runs on the event loop.
        ``timeout`` (seconds, default: the service's) bounds the wait for the model and
        the queue. A batched model's request that had to queue is awaited here
        (``batching.serving``), and leaves the queue when ``disconnected()`` returns (the
        client went away). ``decoded``: ``decode`` only hands over inputs decoded already
        (cheap enough for the event loop; see the module docstring)."""
        with self._book.track(name, protocol) as record:
            admission = admitted(name)  # overload: refused at once, on the loop
            try:
                taken = self._leases.take_ready(name, version, timeout)  # READY: no await
                if taken is None:
                    taken = await self._leases.take(name, version, timeout)
                lease, deadline = taken
                if decoded and gathering(lease.model) and as_is(lease.model.signature, decode):
                    with self._scrubber.mapped(name):  # one block for both
                        queued = self._submit(record, lease, deadline, decode, encode, admission)
                        admission = None  # released: queued, counted there now
                        outputs = await finish(queued, disconnected)
                    return record.finish(queued, outputs, encode)  # type: ignore[no-any-return]
                # the hop awaited here, not in a coroutine of its own
                job, ticket = self._start(record, lease, deadline, decode, encode, admission)
                try:
                    result = await job.waiter
                except BaseException as exc:
                    raised = self._leases.ended(name, lease, job, exc, _abandon)
                    if raised is not exc:
                        raise raised from None
                    if isinstance(exc, asyncio.CancelledError):
                        ticket.cancel()  # a request waiting for its batch leaves
                    raise
                if not isinstance(result, Queued):
                    return result
                queued = result
                answer_there(queued, record.answering(queued.name, queued.version, encode))
            finally:
                if admission is not None:
                    admission.release()  # one that failed before it was queued
            with self._scrubber.mapped(name):
                outputs = await finish(queued, disconnected)
            return record.finish(queued, outputs, encode)  # type: ignore[no-any-return]

    @staticmethod
    def _submit(
        record: Record,
        lease: Any,
        deadline: float | None,
        decode: Decode,
        encode: Encode[T],
        admission: Admission | None,
    ) -> Queued:
        """Queue the request from the loop (see the module docstring), inside the
        caller's ``Scrubber.mapped`` block; the lease is given back if it fails, else the
        queued request holds it (``Held``: no ``ExitStack``)."""
        model = lease.model
        held = Held(lease)
        try:
            check_deadline(deadline)
            inputs = record.decode(model, decode)
            prepare = record.answering(model.name, model.version, encode)
            queued = submit(model, inputs, deadline, held, prepare, admission)
        except BaseException:
            held.close()
            raise
        if admission is not None:
            admission.release()  # queued: counted there now
        return queued

    def _start(
        self,
        record: Record,
        lease: Any,
        deadline: float | None,
        decode: Decode,
        encode: Encode[T],
        admission: Admission | None,
    ) -> tuple[Job[T | Queued], Ticket]:
        """Decode, predict and encode handed to a worker thread (see the module
        docstring); the ticket takes the request back if its caller goes while it waits
        for its batch."""
        ticket = Ticket()

        def decoded(signature: Signature) -> dict[str, np.ndarray]:
            inputs = decode(signature)
            if admission is not None:
                admission.release()  # it is queued (or runs) next: counted there
            return inputs

        def run(model: Any, deadline: float | None, lease: Holding) -> T | Queued:
            return record.run(model, deadline, lease, decoded, encode, ticket)  # type: ignore[no-any-return]

        return self._leases.start(lease, deadline, run), ticket

    def infer_blocking(
        self,
        name: str,
        version: str | None,
        decode: Decode,
        encode: Encode[T],
        *,
        protocol: str,
        timeout: float | None = None,
        call: Call | None = None,
    ) -> T:
        """``infer`` on the caller's thread: no event loop, no hop. At most ``slots``
        such requests run at once (the rest wait, first come first served). ``call`` is
        left (``call.leave()``) when the client goes away: a request that has not started
        is then never run (``Gone``), one waiting for its batch leaves the queue."""
        call = Call() if call is None else call
        with self._book.track(name, protocol) as record:
            refuse_when_full(name)
            seconds = self._default_timeout if timeout is None else timeout
            deadline = None if seconds is None else time.monotonic() + seconds
            why = f"the request's deadline ({seconds or 0:g} s) passed before it could run"
            lease = self._leases.acquire(name, version, seconds)
            with self._scrubber.mapped(name, passing=(Gone,)):
                with ExitStack() as stack:
                    stack.callback(lease.release)  # unless a request queued for its batch takes it
                    with self._slots.hold(call, deadline, why):
                        call.check(deadline, why)
                        result = record.run(lease.model, deadline, stack, decode, encode)
                if isinstance(result, Queued):
                    outputs = wait_queued(result, call)
                    return record.finish(result, outputs, encode)  # type: ignore[no-any-return]
                return result  # type: ignore[no-any-return]


def _abandon(left: Any) -> None:
    """A request whose caller went away while its worker ran it: one left queued for its
    batch leaves the queue."""
    if isinstance(left, Queued):
        abandon(left)


def as_is(signature: Signature, decode: Decode) -> bool:
    """Whether ``decode``'s inputs (decoded already) can be queued from the event loop:
    no input over ``LOOP_CONVERT_BYTES`` needs converting to its input's dtype. One that
    ``decode`` refuses goes to a worker thread too, whose decode raises as it always has."""
    try:
        inputs = decode(signature)
    except Exception:
        return False
    for spec in signature.inputs:
        value = inputs.get(spec.name)
        if (
            isinstance(value, np.ndarray)
            and value.nbytes > LOOP_CONVERT_BYTES
            and value.dtype != spec.dtype
        ):
            return False
    return True
