"""``BatchedModel``: a loaded model whose ``predict`` goes through a ``Batcher``.

Made by the load path when batching is on (``model.toml [batching]`` or
``keepwarm.load(..., batching=...)``), so the batcher lives and dies with its version:
created at load, its buckets warmed (each run once, timed, seeding the latency table:
the smallest before the version serves, the others on a thread just after, the batcher
capped at the largest warm one meanwhile), closed when the version is unloaded.
A bucket that fails to warm after the version serves stops the warmup: the version stays
READY, batches stay capped at the largest bucket that warmed (a larger request runs in
pieces), and ``warm_failure`` says why (shown as the READY version's reason in status).
Closing waits for a warm run under way at most ``CLOSE_WAIT_SECONDS``, then logs and
closes the model anyway (a run that hangs never holds up an unload).
Everything that predicts through a lease (``Model.predict``, ``LeasedModel.predict``, the
server) batches without knowing.
A model that cannot be batched (an input without a leading batch axis) is served as it
is, and its warmup note says why.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

from keepwarm.batching.batcher import Batcher
from keepwarm.batching.executor import Executor, ThreadExecutor, pool_size, threads_per_call
from keepwarm.batching.merge import PadAxes, buckets
from keepwarm.batching.registry import register, unregister
from keepwarm.batching.stats import BatchStats
from keepwarm.batching.warm_inputs import failed, warm_inputs
from keepwarm.runtimes.base import LoadedModel
from keepwarm.signature import Signature
from keepwarm.warmup import FAILURES

_log = logging.getLogger("keepwarm.batching")
_shared_lock = threading.Lock()
_shared: ThreadExecutor | None = None
#: How long ``BatchedModel.close`` waits for a bucket's warm run under way to end before
#: it closes the model anyway (the run keeps what it uses alive until it returns).
CLOSE_WAIT_SECONDS = 10.0


def shared_executor() -> ThreadExecutor:
    """The process's batch threads (one per core, at least 2), made on first use; each
    model's batcher bounds its own share with its slots."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = ThreadExecutor(max(2, os.cpu_count() or 1))
        return _shared


def unbatchable(signature: Signature) -> str | None:
    """Why requests to a model with ``signature`` cannot be batched, or None."""
    if not signature.inputs:
        return "the model has no inputs"
    for spec in signature.inputs:
        if spec.shape is None:
            return f"input {spec.name!r} has an unknown rank"
        if not spec.shape or spec.shape[0] is not None:
            return f"input {spec.name!r} has no batch axis (a first axis of unknown size)"
    groups = signature.batch_groups
    if groups is not None and (len(groups) != 1 or len(groups[0]) != len(signature.inputs)):
        return "the inputs do not share one batch axis"
    return None


def open_axes(signature: Signature) -> dict[str, tuple[int, ...]] | None:
    """Per output, the non-batch axes of unknown size (those padding may have grown);
    None when an output's rank is unknown (then any axis of the padded size is cropped)."""
    found = {}
    for spec in signature.outputs:
        if spec.shape is None:
            return None
        found[spec.name] = tuple(a for a, d in enumerate(spec.shape) if a and d is None)
    return found


class BatchedModel:
    """A ``LoadedModel`` whose ``predict`` is batched; see the module docstring."""

    def __init__(
        self,
        model: LoadedModel,
        *,
        name: str,
        version: int | None = None,
        max_batch_size: int,
        max_delay_ms: float,
        max_queue: int,
        pad_axes: PadAxes,
        options: Mapping[str, Any] | None = None,
        executor: Executor | None = None,
        slots: int | None = None,
        run_alone: int | None = None,
        close_wait: float = CLOSE_WAIT_SECONDS,
    ) -> None:
        self.inner = model
        self.name, self.version = name, version
        self.signature = model.signature
        self.nbytes = model.nbytes
        self.nbytes_source = model.nbytes_source
        self.why_not = unbatchable(model.signature)
        if self.why_not is None:
            pad_axes.check(model.signature)  # no axis to pad that the inputs lack
        executor = executor if executor is not None else shared_executor()
        cores = os.cpu_count() or 1
        # At least two batches at once: one's Python work (merge, split, the callers'
        # decoding) overlaps the other's native work, and TensorFlow's and ONNX Runtime's
        # pools are per process or per session, so a second call adds no threads.
        fit = pool_size(cores, threads_per_call(options or {}, cores))
        # ``slots`` given: the model says how many calls it serves at once (its processes).
        processes = slots
        slots = min(executor.slots, slots if slots is not None else max(2, fit))
        # While nothing is queued, a request runs at once on its caller's thread, up to
        # ``slots`` such runs; ``run_alone`` (``[batching] run_alone``) lets more run alone
        # (a model whose calls leave cores idle may serve more that way at 4-8 clients).
        # Not the default: at 32 clients extra alone-runs kept batches from forming on the
        # MLP (most batches of size 1) and doubled the server's CPU per request.
        alone = slots if run_alone is None else max(slots, run_alone)
        self.batcher = Batcher(
            model.predict,
            name=name,
            executor=executor,
            max_batch_size=max_batch_size,
            max_delay_ms=max_delay_ms,
            max_queue=max_queue,
            pad_axes=pad_axes,
            crop_axes=open_axes(model.signature),
            slots=slots,
            alone=alone,
            # Processes serve one call each: a call past them would wait for one anyway, so
            # callers past the slots queue, to be batched. In-process runtimes run calls
            # side by side: a few ``predict`` callers each run alone (``crowd``).
            crowd=0 if processes is not None else None,
        )
        self._warmer: threading.Thread | None = None
        self._warm_done = threading.Event()
        self._closing = threading.Event()
        self._close_wait = close_wait
        #: Why the buckets past the cap were not warmed (None: all warm, or warming).
        self.warm_failure: str | None = None
        if self.why_not is None:  # every in-process call: the batcher's own, a frame fewer
            self.predict = self.batcher.predict  # type: ignore[method-assign]
        register(self)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The inner model's (a model that cannot be batched); else replaced, per instance,
        by its batcher's ``predict``."""
        if self.why_not is not None:
            return self.inner.predict(inputs)
        return self.batcher.predict(inputs)

    def start(
        self,
        inputs: dict[str, np.ndarray],
        *,
        deadline: float | None = None,
        bind: Callable[[Future[dict[str, np.ndarray]]], bool] | None = None,
        follow: bool = True,
        tried: bool = False,
    ) -> Future[dict[str, np.ndarray]]:
        """From a thread: run now when a slot is free (the future is done), else queue and
        wait a little for the batch (a pending future, cancellable until its batch
        starts); see ``Batcher.start``."""
        if self.why_not is not None:
            done: Future[dict[str, np.ndarray]] = Future()
            try:
                done.set_result(self.inner.predict(inputs))
            except Exception as exc:
                done.set_exception(exc)
            return done
        return self.batcher.start(inputs, deadline=deadline, bind=bind, follow=follow, tried=tried)

    async def predict_async(
        self, inputs: dict[str, np.ndarray], *, timeout: float | None = None
    ) -> dict[str, np.ndarray]:
        """For event-loop callers: awaits the batch (cancelling leaves the queue)."""
        if self.why_not is not None:
            return await asyncio.to_thread(self.inner.predict, inputs)
        return await self.batcher.predict_async(inputs, timeout=timeout)

    def on_broken(self, callback: Callable[[str], None]) -> None:
        """The inner model's (a ``WorkerModel``'s): ``callback(reason)`` if it breaks."""
        watch = getattr(self.inner, "on_broken", None)
        if callable(watch):
            watch(callback)

    def stats(self) -> BatchStats:
        return self.batcher.stats()

    def warm_buckets(self, samples: Sequence[Mapping[str, np.ndarray]] = ()) -> str | None:
        """Run each bucket once, smallest first, so that no request is the first at its
        batch size; each run's time seeds the latency table. The smallest bucket runs now,
        before the version serves; the others on a thread afterwards, and until a bucket is
        warm the batcher forms no batch that large (``Batcher.cap_batches``: a larger
        request runs in pieces). A note when batching is off for this model or the first
        bucket could not be warmed (the others' failure: ``warm_failure``)."""
        if self.why_not is not None:
            return f"batching off: {self.why_not}"
        sizes = buckets(self.batcher.max_batch_size)
        first, failure = warm_inputs(self.signature, sizes[0], samples)
        if failure is not None:  # batches as if unwarmed: no bucket is warm to cap at
            return f"batch sizes not warmed: {failure}"
        if first is None:
            return "buckets not warmed: no inputs can be generated (an unknown rank)"
        self.batcher.cap_batches(sizes[0])
        failure = self._warm(sizes[0], first)
        if len(sizes) == 1:
            self.batcher.cap_batches(None)
            self._warm_done.set()
        else:
            self._warmer = threading.Thread(
                target=self._warm_rest,
                args=(sizes[1:], list(samples)),
                name=f"keepwarm-warm-{self.name}",
                daemon=True,
            )
            self._warmer.start()
        return None if failure is None else f"batch sizes not warmed: {failure}"

    def _warm_rest(self, sizes: Sequence[int], samples: Sequence[Mapping[str, np.ndarray]]) -> None:
        """The warmup thread: each bucket of ``sizes`` in turn, the cap raised after each,
        until done, a bucket fails (the cap stays at the last warm one) or the model
        closes."""
        warm = self.batcher.latency.cap
        try:
            for bucket in sizes:
                if self._closing.is_set():
                    return
                inputs, failure = warm_inputs(self.signature, bucket, samples)
                if inputs is not None:
                    failure = self._warm(bucket, inputs)
                if failure is not None:
                    if not self._closing.is_set():  # not a run the unload cut short
                        self.warm_failure = (
                            f"batch sizes over {warm} not warmed ({failure}): batches "
                            f"capped at {warm} rows, larger requests run in pieces"
                        )
                        _log.warning("model %r: %s", self.name, self.warm_failure)
                    return
                self.batcher.cap_batches(bucket)
                warm = bucket
            self.batcher.cap_batches(None)
        finally:
            self._warm_done.set()

    def _warm(self, bucket: int, inputs: dict[str, np.ndarray]) -> str | None:
        """One run at ``bucket``, timed into the latency table; why it failed, or None."""
        try:
            began = time.perf_counter()
            self.inner.predict(inputs)  # the first call at a size pays for it, once
            self.batcher.latency.seed(bucket, time.perf_counter() - began)
        except FAILURES as exc:
            return failed(bucket, exc)
        return None

    def wait_warm(self, timeout: float | None = None) -> bool:
        """Wait until every bucket is warm (or warming stopped); whether that happened
        within ``timeout`` seconds. True at once when no warmup was started."""
        return self._warmer is None or self._warm_done.wait(timeout)

    def stop_warming(self, timeout: float) -> bool:
        """Start no further bucket's warm run and wait up to ``timeout`` seconds for the
        one under way; whether none is running."""
        self._closing.set()
        if self._warmer is not None:
            self._warmer.join(timeout)
        return self._warmer is None or not self._warmer.is_alive()

    def close(self) -> None:
        """Stop warming, unregister, stop taking requests; once the warmup's run under way
        (if any) has ended, or after ``close_wait`` seconds (logged), close the inner
        model."""
        self._closing.set()
        unregister(self)
        self.batcher.close()
        if not self.stop_warming(self._close_wait):
            _log.warning(
                "model %r: a bucket's warm run did not end within %g s of the unload; "
                "closing the model anyway (the run ends on its own, its result unused)",
                self.name,
                self._close_wait,
            )
        self.inner.close()
