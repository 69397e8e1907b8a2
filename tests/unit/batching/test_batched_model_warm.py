"""``BatchedModel``'s buckets warming after the version serves, when a warm run goes wrong:
a run that hangs holds an unload for ``close_wait`` seconds at most (logged; the model is
closed anyway); a bucket that fails stops the warmup, batches stay capped at the largest
bucket that warmed (a larger request runs in pieces), and ``warm_failure`` says why, as
the READY version's reason in status. A warm run's ``sys.exit()`` is a failure like any
other. Plain Python models; calls held by events, no sleeps."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from keepwarm.batching import ThreadExecutor
from keepwarm.batching.merge import NO_PADDING
from keepwarm.batching.model import BatchedModel
from keepwarm.batching.registry import live_batchers
from keepwarm.repository import Repository
from keepwarm.service_status import model_states
from keepwarm.signature import Signature, TensorSpec
from support.batch_models import run_clients
from support.hostile_models import Exits, place_exiting
from support.waiting import wait_until

WAIT_S = 30.0
F32 = np.dtype("float32")


class Trouble:
    """A ``LoadedModel`` (``x`` float32 [-1, 2] doubled) whose call at ``hang_at`` rows
    waits for ``gate``, and whose call at ``fail_at`` rows raises ``failure``."""

    def __init__(
        self, *, hang_at: int = 0, fail_at: int = 0, failure: BaseException | None = None
    ) -> None:
        self.signature = Signature(
            (TensorSpec("x", F32, (None, 2)),), (TensorSpec("y", F32, (None, 2)),)
        )
        self.nbytes, self.nbytes_source = 0, "files"
        self.hang_at, self.fail_at, self.failure = hang_at, fail_at, failure
        self.gate, self.hanging = threading.Event(), threading.Event()
        self.lock = threading.Lock()
        self.calls: list[int] = []
        self.closed = False

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = len(inputs["x"])
        with self.lock:
            self.calls.append(rows)
        if rows == self.hang_at:
            self.hanging.set()
            assert self.gate.wait(WAIT_S), "gate never opened"
        if rows == self.fail_at and self.failure is not None:
            raise self.failure
        return {"y": inputs["x"] * 2}

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def executor() -> Iterator[ThreadExecutor]:
    pool = ThreadExecutor(2)
    yield pool
    pool.close()


def _batched(model: Trouble, executor: ThreadExecutor, **kwargs: float) -> BatchedModel:
    return BatchedModel(
        model, name="trouble", max_batch_size=16, max_delay_ms=0, max_queue=64,
        pad_axes=NO_PADDING, executor=executor, **kwargs,
    )  # fmt: skip


def test_a_hung_warm_run_holds_the_unload_for_close_wait_at_most(
    executor: ThreadExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    model = Trouble(hang_at=4)
    batched = _batched(model, executor, close_wait=0.2)
    assert batched.warm_buckets() is None
    assert model.hanging.wait(WAIT_S)  # warming bucket 4, held
    closer = threading.Thread(target=batched.close)
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="keepwarm.batching"):
        closer.start()
        closer.join(WAIT_S)
    try:
        assert not closer.is_alive(), "close() waited for the hung warm run"
        assert time.monotonic() - began < WAIT_S
        assert model.closed
        assert "did not end within 0.2 s" in caplog.text
    finally:
        model.gate.set()
    assert batched.wait_warm(WAIT_S)
    assert model.calls == [1, 2, 4]  # the warmup stopped: no bucket after the hung one


def test_close_waits_for_a_warm_run_that_ends(executor: ThreadExecutor) -> None:
    """Within ``close_wait`` the run under way ends before the model is closed."""
    model = Trouble(hang_at=2)
    batched = _batched(model, executor, close_wait=WAIT_S)
    batched.warm_buckets()
    assert model.hanging.wait(WAIT_S)
    closer = threading.Thread(target=batched.close)
    closer.start()
    assert not model.closed
    model.gate.set()
    closer.join(WAIT_S)
    assert model.closed and batched.wait_warm(0)


@pytest.mark.parametrize("failure", [RuntimeError("no room for 8 rows"), SystemExit(3)])
def test_a_bucket_that_fails_keeps_batches_capped_at_the_last_warm_one(
    executor: ThreadExecutor, failure: BaseException
) -> None:
    model = Trouble(fail_at=8, failure=failure)
    batched = _batched(model, executor)
    try:
        assert batched.warm_buckets() is None
        assert batched.wait_warm(WAIT_S)
        assert model.calls == [1, 2, 4, 8]  # 16 was not tried
        assert batched.batcher.latency.cap == 4
        kind = type(failure).__name__
        assert batched.warm_failure is not None
        assert f"batch sizes over 4 not warmed (8: {kind}: " in batched.warm_failure
        (view,) = [v for v in live_batchers() if v.model == "trouble"]
        assert view.warm_failure == batched.warm_failure
        with model.lock:
            model.calls.clear()
        x = np.arange(24, dtype=F32).reshape(12, 2)
        assert batched.predict({"x": x})["y"].tolist() == (x * 2).tolist()  # in pieces

        def client(index: int) -> None:
            rows = np.full((1 + index % 3, 2), index, F32)
            assert batched.predict({"x": rows})["y"].tolist() == (rows * 2).tolist()

        run_clients(12, client)
        with model.lock:
            assert model.calls and max(model.calls) <= 4, model.calls
    finally:
        batched.close()


def test_status_names_the_failure_of_a_ready_version(tmp_path: Path) -> None:
    place_exiting(tmp_path / "fails8", "[batching]\nmax_batch_size = 16\n", cls="FailsAtEight")
    Exits.gate.set()
    with Repository(tmp_path, allow_unsafe=True, poll_seconds=60) as repo:
        with repo.lease("fails8", timeout=WAIT_S) as model:
            assert model.predict({"x": np.ones((1, 2), F32)})["y"].tolist() == [[2.0, 2.0]]
        assert wait_until(
            lambda: any(v.warm_failure for v in live_batchers() if v.model == "fails8"), WAIT_S
        )
        state, reason = model_states(repo.status())["fails8"][1]
        assert state == "READY"
        assert "batch sizes over 4 not warmed (8: RuntimeError: no room for 8 rows)" in reason
        assert "batches capped at 4 rows" in reason
