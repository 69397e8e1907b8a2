"""Buckets warm progressively (issue 9, cold start of issue 7): the version serves once its
smallest bucket is warm; the others warm on a thread, and until one is warm no batch that
large runs (a larger request runs in pieces), so no request is the first at its size.

The example MLP, a real TensorFlow SavedModel, behind ``BatchedModel``; its calls pass
through ``Held``, which records the batch sizes the model saw and holds the warmup's
first call at ``HELD_AT`` rows until the test opens its gate (requests never reach that
size while it is held: that is what is checked)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from keepwarm.batching import ThreadExecutor
from keepwarm.batching.merge import NO_PADDING
from keepwarm.batching.model import BatchedModel
from keepwarm.batching.registry import live_batchers
from keepwarm.runtimes.base import LoadedModel
from keepwarm.runtimes.savedmodel import SavedModelRuntime
from support.batch_models import run_clients
from support.waiting import wait_until

HELD_AT = 8


class Held:
    """A loaded model whose calls are recorded (rows per call, with the calling thread's
    name) and whose first call at ``HELD_AT`` rows waits for ``gate``."""

    def __init__(self, inner: LoadedModel) -> None:
        self.inner = inner
        self.signature = inner.signature
        self.nbytes, self.nbytes_source = inner.nbytes, inner.nbytes_source
        self.gate = threading.Event()
        self.holding = threading.Event()
        self.lock = threading.Lock()
        self.calls: list[tuple[int, str]] = []
        self.running = 0  # calls under way
        self.closed_in_call: list[int] = []  # ``running`` when closed

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = len(next(iter(inputs.values())))
        with self.lock:
            self.calls.append((rows, threading.current_thread().name))
            first_at_held = rows == HELD_AT and not self.holding.is_set()
            self.running += 1
        try:
            if first_at_held:
                self.holding.set()
                assert self.gate.wait(60), "gate never opened"
            return self.inner.predict(inputs)
        finally:
            with self.lock:
                self.running -= 1

    def close(self) -> None:
        with self.lock:
            self.closed_in_call.append(self.running)
        self.inner.close()

    def sizes(self, warmup: bool) -> list[int]:
        with self.lock:
            return [r for r, name in self.calls if name.startswith("keepwarm-warm") == warmup]


@pytest.fixture
def executor() -> Iterator[ThreadExecutor]:
    pool = ThreadExecutor(2)
    yield pool
    pool.close()


def _batched(
    example_models: Path, executor: ThreadExecutor, name: str = "mlp"
) -> tuple[BatchedModel, Held]:
    loaded = SavedModelRuntime().load(example_models / "mlp" / "1", signature=None, options={})
    held = Held(loaded)
    model = BatchedModel(
        held,  # type: ignore[arg-type]
        name=name,
        max_batch_size=32,
        max_delay_ms=5.0,
        max_queue=256,
        pad_axes=NO_PADDING,
        executor=executor,
    )
    return model, held


def test_while_larger_buckets_warm_no_batch_exceeds_the_warm_ones(
    example_models: Path, executor: ThreadExecutor
) -> None:
    model, held = _batched(example_models, executor)
    try:
        assert model.warm_buckets() is None  # returns once bucket 1 is warm
        assert held.holding.wait(60)  # the warmup thread: 2 and 4 done, 8 under way
        assert model.batcher.latency.cap == 4
        assert not model.wait_warm(0)
        rng = np.random.default_rng(7)
        requests = [rng.random((rows, 784), dtype=np.float32) for rows in (1, 3, 5, 7, 16, 32)]
        requests *= 4
        results: dict[int, np.ndarray] = {}

        def client(index: int) -> None:
            results[index] = model.predict({"image": requests[index]})["probs"]

        run_clients(len(requests), client)
        served = held.sizes(warmup=False)
        assert served and max(served) <= 4, served  # pieces and batches at warm sizes only
        assert sum(served) >= sum(len(r) for r in requests)
        for index, x in enumerate(requests):
            direct = held.inner.predict({"image": x})["probs"]
            np.testing.assert_allclose(results[index], direct, rtol=1e-4, atol=1e-6)

        held.gate.set()
        assert model.wait_warm(60)
        assert model.batcher.latency.cap == 32
        assert held.sizes(warmup=True) == [2, 4, 8, 16, 32]  # each bucket once, in order
        assert sorted(model.batcher.latency.snapshot()) == [1, 2, 4, 8, 16, 32]
        before = len(held.sizes(warmup=False))
        out = model.predict({"image": requests[-1]})["probs"]  # 32 rows: one call now
        assert held.sizes(warmup=False)[before:] == [32] and out.shape == (32, 10)
    finally:
        held.gate.set()
        model.close()


def test_closing_stops_the_warmup_after_the_run_under_way(
    example_models: Path, executor: ThreadExecutor
) -> None:
    model, held = _batched(example_models, executor, name="mlp-closing")
    assert model.warm_buckets() is None
    assert held.holding.wait(60)  # the warmup's run at 8 rows is under way
    closer = threading.Thread(target=model.close)
    closer.start()
    # Unregistered once it has told the warmup to stop (it then waits for the run).
    assert wait_until(lambda: all(v.model != "mlp-closing" for v in live_batchers()))
    held.gate.set()
    closer.join(60)
    assert not closer.is_alive()
    assert held.sizes(warmup=True) == [2, 4, 8]  # nothing after it: 16 and 32 never ran
    assert held.closed_in_call == [0]  # the model was closed after that run, not during it
    assert model.wait_warm(0)
