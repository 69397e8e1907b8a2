"""The server's side of batching: a request is admitted, decoded and handed to its
version's batcher, on a worker thread or from the event loop; if it had to queue, the
event loop awaits it.

- ``admit_request`` (event loop, before the body is read): refuses at once when the
  model's queue is full, else reserves a place for the request until ``admitted`` takes
  it (``keepwarm.batching.task_admission``, re-exported here).

- ``begin`` (worker thread, under the request's lease): runs the request at once when
  the model is free (on that thread, as without batching), else queues it and returns a
  ``Queued``, which takes over the lease.
- ``submit`` (event loop, inputs decoded there already): queues the request; a batch
  that can start now starts on a batch thread, never on the loop.
- ``finish`` (event loop): awaits the queued request up to its deadline (then 504: it
  leaves the queue, not run), or until the client goes away (it leaves the queue too),
  through callbacks (no task per request unless it waits long enough to watch its
  client); the lease is released once the request's batch no longer needs the model.
- ``prepare`` (``submit``'s argument, or ``answer_there`` for a request a worker thread
  queued): the request's answer is encoded by the batch thread that runs it, for all of
  its batch before any is answered (``dispatch.ready``); ``prepared`` is that answer, for
  the loop to write (None: not made there, as when its batch ran before the worker's
  ``answer_there``; the loop encodes it).

The loop's part of a queued request (``submit``, ``finish``, and ``service_infer``'s
``_submit``) takes no ``ExitStack`` (a ``Held`` lease), one ``Scrubber.mapped`` block, and
no running-loop or current-task look-up past ``admit_request``'s (each a ``getpid``
system call in Python 3.11). Measured against the version before (session 28, MLP, 4
clients, a loaded machine): ``py-spy --gil`` of the in-process load
(``bench/loop_cost_many.py``' child) put ``Requests.infer`` at 40.7% of the loop's
samples against 44.2%, ``finish`` 5.8% against 8.2%, ``current_task`` 1.9% against
4.4%; ``bench/loop_cost_many.py --c 4`` loop CPU per request 0.846x (9 rounds; two
identical trees read 0.979x); ``bench/ab.py`` over HTTP, 8 rounds: loop CPU per request
0.865x at 4 clients, 0.898x at 8, 0.947x at 1 (not this path: noise), req/s 1.110x
and 1.101x; ``bench/onoff_run.py --c 4`` (12 rounds): on against off req/s 1.072x, p50
-0.300 ms (its control 1.073x, -0.046 ms), the version before 1.032x, -0.132 ms
(control 0.982x, +0.128 ms), on against the version before's on 1.081x, -0.019 ms.

A lone client (``gathering`` false: a worker thread, ``begin``, ``Batcher.run_alone``)
costs batching ~0.03 ms a request whatever the input's size: no copy, no padding, the
same thread and ``predict`` (``tests/unit/batching/test_batching_alone.py``). Session 29,
MobileNetV2 ([1, 224, 224, 3] FP32, ~40 ms), per request paired with its cycle's off
request, load 2-8: ``bench/onoff_c1_service.py`` (``service.infer`` as the v2 route calls
it, 800 cycles): outside the model +0.028 +- 0.003 ms (control +0.008 +- 0.004): the
loop's admission and hop +0.012, the worker before the call +0.011, after +0.005; the
model's call +0.14 +- 0.23. ``bench/onoff_c1_inproc.py`` (``begin``, 1000 cycles):
outside +0.015 +- 0.0004 ms; the call on this load against its own model unbatched
+0.014 +- 0.157 ms, two loads both off +0.38 +- 0.12 and -0.27 +- 0.15. So the served
cell's +0.3 to +0.7 ms (``bench/onoff_cells.py``) is the model's scatter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from keepwarm.batching.model import BatchedModel
from keepwarm.batching.pending import NOT_PREPARED, Pending
from keepwarm.batching.registry import Admission
from keepwarm.batching.task_admission import admit_request, admitted
from keepwarm.batching.waits import DONE, GONE, Wait
from keepwarm.deadline import request_deadline
from keepwarm.errors import DeadlineExceededError, UnavailableError

__all__ = [
    "Arrays",
    "Holding",
    "Queued",
    "Ticket",
    "abandon",
    "admit_request",
    "admitted",
    "answer_there",
    "batched",
    "begin",
    "finish",
    "gathering",
    "prepared",
    "submit",
]

Arrays = dict[str, np.ndarray]


class Holding(Protocol):
    """What holds a request's lease (an ``ExitStack``, or ``service_leases.Held``):
    ``close()`` gives it back; ``pop_all()`` hands it on (to a request that queued),
    leaving nothing to give back here."""

    def pop_all(self) -> Holding: ...

    def close(self) -> None: ...


@dataclass(slots=True)
class Queued:
    """A request its batcher queued; holds the lease (``release``) until it is done.
    ``loop``: the event loop it was queued from (None: a worker thread queued it), which
    ``finish`` waits on without looking it up again."""

    future: Future[Arrays]
    name: str
    version: int
    release: Holding
    deadline: float | None
    loop: asyncio.AbstractEventLoop | None = None


class Ticket:
    """Lets the event loop take back a request while its worker thread waits for its
    batch (``Batcher.start``): ``cancel()`` (the caller went away) cancels the request
    if it is still queued, which ends that wait."""

    __slots__ = ("_future", "_gone")

    def __init__(self) -> None:
        self._future: Future[Arrays] | None = None
        self._gone = False

    def bind(self, future: Future[Arrays]) -> bool:
        """The worker thread's side: the request's future; False when already gone."""
        self._future = future
        return not self._gone

    def cancel(self) -> None:
        self._gone = True
        future = self._future
        if future is not None:
            future.cancel()


def begin(
    model: Any,
    inputs: Arrays,
    deadline: float | None,
    lease: Holding,
    ticket: Ticket | None = None,
) -> Arrays | Queued:
    """Predict ``inputs`` on leased ``model`` (a ``LeasedModel``): its outputs, or the
    ``Queued`` request (taking over ``lease``) when a batch of its model is running and
    the request's batch did not run while this thread waited for it."""
    raw = model.raw
    if not isinstance(raw, BatchedModel) or raw.why_not is not None:
        if deadline is None:
            return model.predict(inputs)  # type: ignore[no-any-return]
        token = request_deadline.set(deadline)  # a wait below (a worker's restart) ends then
        try:
            return model.predict(inputs)  # type: ignore[no-any-return]
        finally:
            request_deadline.reset(token)
    coerced = raw.signature.coerce(inputs)
    batcher = raw.batcher
    outputs = batcher.run_alone(coerced, deadline)  # nothing runs: here, as unbatched
    if outputs is not None:
        return outputs
    outcome = batcher.run_now(coerced, deadline)  # a free slot: run here, as unbatched
    if outcome is not None:
        if outcome.error is not None:
            raise outcome.error
        return outcome.results[0]
    # Without a ticket (a blocking caller, whose client's leaving this thread cannot
    # see while it waits) the request is not waited for here: it is ``Queued``.
    bind = None if ticket is None else ticket.bind
    future = raw.start(coerced, deadline=deadline, bind=bind, follow=ticket is not None, tried=True)
    if future.done() and not future.cancelled():
        return future.result()
    return Queued(future, model.name, model.version, lease.pop_all(), deadline)


def batched(model: Any) -> bool:
    """Whether leased ``model`` (a ``LeasedModel``) predicts through a batcher."""
    raw = model.raw
    return isinstance(raw, BatchedModel) and raw.why_not is None


def gathering(model: Any) -> bool:
    """Whether a request for leased ``model`` decoded on the event loop is queued from
    there (``submit``): unless its batcher is idle and its requests came one at a time
    lately (``Batcher.idle``), when the request goes as batching off would, to a worker
    thread (``begin``: it runs there at once), so that a lone client pays nothing for the
    batcher, while bursts of many clients still queue together."""
    return batched(model) and not model.raw.batcher.idle


def submit(
    model: Any,
    inputs: Arrays,
    deadline: float | None,
    lease: Holding,
    prepare: Callable[[Arrays], object] | None = None,
    admission: Admission | None = None,
) -> Queued:
    """From the event loop: queue ``inputs`` for leased ``model`` (``batched``); the
    ``Queued`` request takes over ``lease``. The model never runs here: the batch starts
    on a batch thread (or a waiting follower's), once the loop has queued the requests
    it is parsing now (``Batcher.submit_from_loop``). ``prepare``: see the module
    docstring. ``admission``: the request's, whose task gives the running loop without a
    look-up (a ``getpid`` system call, see ``task_admission._disown``: 1.6% of the loop's
    samples at 4 clients)."""
    raw: BatchedModel = model.raw
    task = None if admission is None else admission.task
    loop = asyncio.get_running_loop() if task is None else task.get_loop()
    future = raw.batcher.submit_from_loop(
        model.signature.coerce(inputs), deadline=deadline, prepare=prepare, loop=loop
    )
    return Queued(future, model.name, model.version, lease.pop_all(), deadline, loop)


def answer_there(queued: Queued, prepare: Callable[[Arrays], object]) -> None:
    """``prepare`` for a request a worker thread queued (see the module docstring)."""
    future = queued.future
    if isinstance(future, Pending):
        future.prepare = prepare


def prepared(queued: Queued) -> Any:
    """What ``prepare`` made of ``queued``'s outputs on its batch thread; None if not."""
    made = getattr(queued.future, "prepared", NOT_PREPARED)
    return None if made is NOT_PREPARED else made


async def finish(
    queued: Queued, disconnected: Callable[[], Awaitable[None]] | None = None
) -> Arrays:
    """The outputs of ``queued``; ``DeadlineExceededError`` when its deadline passes first
    (the request is then taken out of the queue, unless its batch already runs). It leaves
    the queue too when ``disconnected()`` returns (watched once the request has waited
    ``waits.WATCH_AFTER_SECONDS``) or when the awaiting task is cancelled (gRPC cancels a
    handler whose client cancelled or whose deadline passed)."""
    future = queued.future
    try:
        if future.done():
            woken = DONE
        else:
            woken = await Wait(future, disconnected, queued.loop).wait(queued.deadline)
        if future.done() and not future.cancelled():
            return future.result()
        future.cancel()  # leaves the queue unless its batch runs (it is not interrupted)
        if woken != GONE:
            raise DeadlineExceededError(
                f"model {queued.name!r}: the request's deadline passed while it waited "
                "for its batch"
            )
        raise UnavailableError(f"model {queued.name!r}: the client went away")
    except asyncio.CancelledError:  # the transport ended the call (a gRPC client that
        future.cancel()  # cancelled, or its deadline): it leaves the queue, as above
        raise
    finally:
        if future.done():  # ``_let_go``, without its frame
            queued.release.close()
        else:
            future.add_done_callback(lambda _: queued.release.close())


def abandon(queued: Queued) -> None:
    """``queued``'s caller went away before awaiting it (its task was cancelled while the
    request was decoded and queued on a worker thread): it leaves the queue, unless its
    batch already runs, and its lease is let go as ``finish`` does."""
    queued.future.cancel()
    _let_go(queued)


def _let_go(queued: Queued) -> None:
    """Release ``queued``'s lease once its future is done: at once, or when its running
    batch ends (the model stays leased until then)."""
    if queued.future.done():
        queued.release.close()
    else:
        queued.future.add_done_callback(lambda _: queued.release.close())
