"""A ``Batcher``'s callers on threads that may block (never an event loop): a server's
worker threads (``run_alone``, ``run_now``, ``start``) and ``predict``'s callers past the
crowd or behind a queue (``_predict``). Each runs its request at once, on its own thread,
when it may; else the request queues and the thread waits for its batch as a follower
(``keepwarm.batching.relay``), perhaps leading it. ``Batcher`` inherits these."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future

from keepwarm.batching.dispatch import Dispatch
from keepwarm.batching.loose import Declined, Loose, decline
from keepwarm.batching.merge import Arrays
from keepwarm.batching.relay import Follower
from keepwarm.batching.runner import Outcome
from keepwarm.errors import DeadlineExceededError


class ThreadCallers:
    """The thread callers' side of ``Batcher`` (which sets the attributes below)."""

    name: str
    _dispatch: Dispatch
    _loose: Loose
    _clock: Callable[[], float]
    _follow_limit: int  # followers at most (server threads waiting for a batch)
    _follow_seconds: float  # how long ``start`` waits for a queued request's batch

    def start(
        self,
        inputs: Arrays,
        *,
        deadline: float | None = None,
        bind: Callable[[Future[Arrays]], bool] | None = None,
        follow: bool = True,
        tried: bool = False,
    ) -> Future[Arrays]:
        """``submit`` for a caller on a thread that may block (never the event loop): when
        a slot is free the batch runs here, at once, and the future returned is done; else
        the request queues and this thread waits as a follower (a few at most, for up to
        ``follow_seconds``): done when its batch ran meanwhile (perhaps here), else pending
        (cancellable until its batch starts). ``bind(future)``, called before waiting,
        gives the caller's event loop the future, to cancel (which ends the wait); False:
        the caller is gone already (the request is cancelled, not waited for). With
        ``follow`` false the thread never waits (a pending future at once). ``tried``: the
        caller found no free slot with ``run_now`` just now (the request queues)."""
        outcome = None if tried else self._dispatch.run_now(inputs, deadline)
        if outcome is not None:
            future: Future[Arrays] = Future()
            outcome.deliver([future])
            return future
        waits = follow and self._dispatch.followers < self._follow_limit
        follower = Follower() if waits else None
        pending, batch = self._dispatch.enqueue(inputs, deadline, follower)
        if batch:  # a slot was free: the head's batch (this request's, unless it queued
            self._dispatch.work(batch, inline=True)  # behind another shape)
        if follower is not None and not pending.done():
            if bind is not None and not bind(pending):
                pending.cancel()
                return pending
            until = self._clock() + self._follow_seconds
            self._dispatch.follow(follower, until if deadline is None else min(until, deadline))
        return pending

    def run_now(self, inputs: Arrays, deadline: float | None = None) -> Outcome | None:
        """``start``'s first step for a caller on a thread: when a slot is free and nothing
        is queued, the request runs here, at once (its outcome); None: it must queue."""
        return self._dispatch.run_now(inputs, deadline)

    def run_alone(self, inputs: Arrays, deadline: float | None = None) -> Arrays | None:
        """A server thread's first step: while nothing of this model runs or is queued,
        the request runs here, at once, alone, as ``predict``'s callers in the crowd do
        (without the batcher's lock: 430 bytecodes fewer than ``run_now`` on the MLP);
        its outputs, or its error raised. None: something runs or is queued (a request
        queued since the check, too), or callers never run alone here: nothing was
        queued for it, and the caller goes on to ``run_now`` and ``start``, whose wait
        its client's leaving can end (``predict``'s own wait could not be)."""
        if self._loose.crowd < 1 or not self._dispatch.vacant:
            return None
        timeout = None if deadline is None else deadline - self._clock()
        try:
            return self._loose.predict(inputs, timeout=timeout, slow=decline)
        except Declined:
            return None

    def _predict(self, inputs: Arrays, timeout: float | None) -> Arrays:
        """``predict``'s caller past the crowd, or with requests queued: run now if a slot
        is free, else queue and wait for the batch (or lead it)."""
        callers = self._loose.callers
        callers.append(None)  # atomic: one entry per caller in here, until it returns
        try:
            deadline = None if timeout is None else self._clock() + timeout
            outcome = self._dispatch.run_now(inputs, deadline)
            if outcome is None:
                return self._queued(inputs, deadline, timeout)
        finally:
            callers.pop()
        if outcome.error is not None:
            raise outcome.interrupt or outcome.error  # Ctrl-C reaches the caller
        return outcome.results[0]

    def _queued(self, inputs: Arrays, deadline: float | None, timeout: float | None) -> Arrays:
        """``predict``'s request that must queue: wait for its batch (or lead it)."""
        follower = Follower()
        future, batch = self._dispatch.enqueue(inputs, deadline, follower)
        interrupt = None  # a batch run here whose model raised it: raised again, below
        if batch:
            interrupt = self._dispatch.work(batch, inline=True)
        if not future.done():
            interrupt = self._dispatch.follow(follower, deadline) or interrupt
        if interrupt is not None:
            raise interrupt
        if future.done():
            return future.result()
        future.cancel()  # leaves the queue if not batched yet; a running batch runs on
        raise self._deadline_error(timeout)

    def _deadline_error(self, timeout: float | None) -> DeadlineExceededError:
        return DeadlineExceededError(
            f"model {self.name!r}: the request's deadline ({timeout:g} s) passed before its answer"
        )
