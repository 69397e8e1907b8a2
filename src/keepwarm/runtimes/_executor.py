"""Which TensorFlow executor runs a flat-called function: the model option ``tf_executor``.

TensorFlow runs a function's graph with an executor. Its default one hands the graph's
kernels to the inter-op thread pool, whose threads sleep between calls: at concurrency 1,
with calls a few hundred µs apart, each call pays for waking them. The single-threaded
executor runs the kernels one after the other on the calling thread (each kernel still
uses the intra-op threads), with no hand-off; what it loses is running independent
branches of the graph at once. In a process with TensorFlow's default inter-op pool (a
library caller's), the MLP's flat call with 300 µs between calls went from 226-280 to
146-175 µs; ``keepwarm serve`` sets ``TF_NUM_INTEROP_THREADS=1``, which takes most of that
cost away already, and there the gain is 2-5%.

It refuses, when the function is first instantiated (its first call), graphs with
reference-typed edges, low-level control flow (``Switch``/``Merge``: TensorFlow lowers
``tf.cond``, ``tf.while_loop`` and the ``tf.debugging`` assertions to them, in TensorFlow 2
functions as in TensorFlow 1 graphs), send/receive pairs (a graph split across devices) and
collective ops. So the first call (the warmup, normally) tries it, and any error there
that the default executor does not repeat keeps the default one for good; ``tf_executor``
on the model says which runs and why.

``tf_executor`` in a model's ``[options]``: ``"single_threaded"`` (the default: that
executor where the function runs under it, else TensorFlow's default one) or ``"default"``
(TensorFlow's default executor, the other never tried). One policy for every model, because
measured (``bench/tf_executor.py``, interleaved, in one process) the single-threaded
executor cost no model anything: MobileNetV2 (a chain of convolutions: nothing for inter-op
threads to run side by side) at batch 1 and 32, one thread and two at once, 0.92-1.01x the
default executor's wall time per call, CPU 0.97-1.01x; the MLP 0.95-0.98x with
``TF_NUM_INTEROP_THREADS=1`` (what ``keepwarm serve`` sets), and without it (a library
caller's process) 0.73-0.75x back to back, 0.62-0.64x with 300 µs between calls.

In the server the choice makes no difference that survives the machine's noise, so the
single-threaded executor stays the default: ``keepwarm serve`` with each default at once
(``bench/ab.py``, KServe v2 JSON, interleaved rounds, three runs, load 1-9), TensorFlow's
default executor against this one gave the MLP 0.94-1.04x req/s at concurrency 1 (median
0.97x; p50 -0.01 to +0.02 ms; CPU per request 0.93-1.06x) and 0.94-1.04x at 32 (median
0.99x; CPU 0.93-1.06x); MobileNetV2 0.99-1.07x at 1 (median 1.03x; CPU 0.98-1.00x) and
0.92-1.00x at 32 (median 0.96x; CPU 0.99-1.03x).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from keepwarm.errors import InvalidConfigError, KeepwarmError

OPTION = "tf_executor"
CHOICES = ("single_threaded", "default")
SINGLE_THREADED = "SINGLE_THREADED_EXECUTOR"

Call = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]
_log = logging.getLogger("keepwarm.runtimes")


def executor_option(options: Mapping[str, Any], runtime: str) -> str:
    """The ``tf_executor`` option's value ("single_threaded" when absent);
    ``InvalidConfigError`` for anything else than one of ``CHOICES``."""
    value = options.get(OPTION, CHOICES[0])
    if not isinstance(value, str) or value not in CHOICES:
        raise InvalidConfigError(
            f"{runtime} option {OPTION} must be one of {', '.join(map(repr, CHOICES))}, "
            f"got {value!r}"
        )
    return value


class FirstCallChooses:
    """A call that tries ``single`` (the single-threaded executor) on the first call and
    keeps it when it answers, else ``default``. ``decide(call, why)`` is told once, with the
    call to keep and the words for it; until then every call goes through here, one at a
    time (the first calls only: warmup)."""

    __slots__ = ("_decide", "_default", "_lock", "_single")

    def __init__(self, single: Call, default: Call, decide: Callable[[Call, str], None]) -> None:
        self._single = single
        self._default = default
        self._decide = decide
        self._lock: threading.Lock | None = threading.Lock()

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        lock = self._lock
        if lock is None:  # decided while this caller had the old call in hand
            return self._single(inputs)
        with lock:
            if self._lock is None:
                return self._single(inputs)
            try:
                out = self._single(inputs)
            except KeepwarmError:  # the inputs, refused before TensorFlow ran anything
                raise
            except Exception as exc:
                # Raises when the inputs (or the model) are at fault: then nothing is known
                # yet, and the next call tries again.
                out = self._default(inputs)
                why = f"default (the single-threaded executor refused the function: {exc})"
                self._single = self._default
                self._done(self._default, why.strip())
                return out
            self._done(self._single, "single-threaded")
            return out

    def _done(self, call: Call, why: str) -> None:
        self._lock = None
        self._decide(call, why)
        log = _log.info if why.startswith("default") else _log.debug
        log("TensorFlow executor for the model's calls: %s", why[:300])
