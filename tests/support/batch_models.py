"""Models and an executor for the batching tests: plain numpy, counted, row by row exact."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


class RowModel:
    """Per row: each input echoed doubled (text: reversed bytes), and the sum of its
    numbers. Exact whatever the batch, so a batched result must equal the unbatched one.
    Counts calls and the rows it saw; ``gate`` (when given) holds every call until set,
    ``entered`` is set when a call begins."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate = gate
        self.entered = threading.Event()
        self.lock = threading.Lock()
        self.calls: list[int] = []  # rows per call
        self.seen: list[Any] = []  # every row of the first input, as bytes

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10), "gate never opened"
        first = next(iter(inputs.values()))
        with self.lock:
            self.calls.append(int(first.shape[0]))
            self.seen.extend(np.asarray(row).tobytes() for row in first)
        out: dict[str, np.ndarray] = {}
        for name, array in inputs.items():
            if array.dtype.kind == "O":
                out[f"{name}_echo"] = np.vectorize(lambda b: bytes(b)[::-1], otypes=[object])(array)
            else:
                out[f"{name}_echo"] = array * 2 if array.dtype != np.bool_ else ~array
                flat = array.reshape(array.shape[0], -1)
                out[f"{name}_sum"] = np.array([row.sum() for row in flat])
        return out


class InlineExecutor:
    """Holds each job until the test runs it (``run_all``): arrivals gather meanwhile."""

    def __init__(self, slots: int = 1) -> None:
        self.slots = slots
        self.jobs: list[tuple[Callable[[], Any], Future[Any]]] = []

    def submit(self, job: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        self.jobs.append((job, future))
        return future

    def run(self, job: Callable[[], object]) -> None:
        self.submit(job)

    def run_all(self) -> int:
        ran = 0
        while self.jobs:
            job, future = self.jobs.pop(0)
            future.set_result(job())
            ran += 1
        return ran

    def close(self) -> None:
        self.jobs.clear()


class RowLoaded:
    """``RowModel`` as a ``LoadedModel``: input ``x`` float32 [-1, 3]."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        from keepwarm.signature import Signature, TensorSpec

        self.rows = RowModel(gate)
        f32 = np.dtype("float32")
        self.signature = Signature(
            (TensorSpec("x", f32, (None, 3)),),
            (TensorSpec("x_echo", f32, (None, 3)), TensorSpec("x_sum", f32, (None,))),
        )
        self.nbytes = 0
        self.nbytes_source = "files"
        self.closed = False

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.rows.predict(inputs)

    def close(self) -> None:
        self.closed = True


def x_rows(value: float, rows: int = 1) -> dict[str, np.ndarray]:
    """Input ``x``: ``rows`` rows of three ``value``s (float32)."""
    return {"x": np.full((rows, 3), value, np.float32)}


def held_batcher(executor: Any, **kwargs: Any) -> tuple[Any, RowModel, threading.Event]:
    """A ``Batcher`` named "m" over a ``RowModel`` whose calls wait for the gate returned."""
    from keepwarm.batching import Batcher

    gate = threading.Event()
    model = RowModel(gate)
    return Batcher(model.predict, name="m", executor=executor, **kwargs), model, gate


@contextmanager
def held_rows(max_batch_size: int, max_queue: int, **kwargs: Any) -> Iterator[tuple[Any, Any]]:
    """A ``BatchedModel`` "rows" (version 3) over a ``RowLoaded`` whose calls wait for
    ``gate``, on a one-thread ``ThreadExecutor`` (``kwargs``: its name): the model, and
    ``(inner, gate)``; closed (the gate opened) at the end."""
    from keepwarm.batching import PadAxes, ThreadExecutor
    from keepwarm.batching.model import BatchedModel

    gate = threading.Event()
    inner = RowLoaded(gate)
    executor = ThreadExecutor(1, **kwargs)  # one slot: a second request queues
    model = BatchedModel(
        inner,
        name="rows",
        version=3,
        max_batch_size=max_batch_size,
        max_delay_ms=0,
        max_queue=max_queue,
        pad_axes=PadAxes(),
        executor=executor,
    )
    try:
        yield model, (inner, gate)
    finally:
        gate.set()
        model.close()
        executor.close()


def run_clients(count: int, client: Callable[[int], None], timeout: float = 120) -> None:
    """``client(index)`` on ``count`` threads released together by a barrier; the first
    exception any of them raised is raised here, in the test's thread."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(30)
            client(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(t.is_alive() for t in threads), "a client did not finish"
    if errors:
        raise errors[0]
