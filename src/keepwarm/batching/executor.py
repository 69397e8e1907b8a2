"""Where batches run.

An ``Executor`` runs the batcher's jobs (merge, predict, split) off the caller's thread
and off the event loop. ``ThreadExecutor`` is for runtimes that release the GIL
(TensorFlow, ONNX Runtime): its size comes from the cores and the threads each call
already uses (``intra_op_num_threads``, ``inter_op_num_threads``), so that models running
side by side do not oversubscribe the cores. The worker-process pool implements the same
protocol: its jobs call a model whose ``predict`` runs in another process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from keepwarm.errors import InvalidConfigError
from keepwarm.thread_priority import lower_this_thread

T = TypeVar("T")


class Executor(Protocol):
    """Runs jobs; ``slots`` is how many batches of one model may run at once."""

    @property
    def slots(self) -> int: ...

    def submit(self, job: Callable[[], T]) -> Future[T]: ...

    def close(self) -> None: ...


def threads_per_call(options: Mapping[str, Any], cores: int) -> int:
    """The threads one model call keeps busy, from its runtime options (the frameworks'
    default for an unset or 0 count is one thread per core)."""
    intra = options.get("intra_op_num_threads")
    inter = options.get("inter_op_num_threads")
    intra_n = intra if type(intra) is int and intra > 0 else cores
    inter_n = inter if type(inter) is int and inter > 0 else 1
    return max(1, intra_n * inter_n)


def pool_size(cores: int | None = None, per_call: int = 0) -> int:
    """Calls that may run at once without oversubscribing ``cores``: ``cores // per_call``
    (at least 1). A runtime using every core per call gets 1: its next batch gathers while
    one runs, and starts on the same thread as soon as it ends."""
    cores = cores or os.cpu_count() or 1
    per_call = per_call or cores
    return max(1, cores // per_call)


class ThreadExecutor:
    """A thread pool of ``threads`` (default: one per core, at least 2); it is not the
    event loop, so a model never runs there."""

    def __init__(self, threads: int | None = None, *, name: str = "keepwarm-batch") -> None:
        self._threads = threads if threads is not None else max(2, os.cpu_count() or 1)
        if type(self._threads) is not int or self._threads < 1:
            raise InvalidConfigError(f"threads must be an integer >= 1, got {threads!r}")
        self._pool = ThreadPoolExecutor(
            self._threads, thread_name_prefix=name, initializer=lower_this_thread
        )

    @property
    def slots(self) -> int:
        return self._threads

    def submit(self, job: Callable[[], T]) -> Future[T]:
        return self._pool.submit(job)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
