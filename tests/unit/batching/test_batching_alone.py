"""A lone request on an idle batched model (a server's concurrency 1) reaches the model as
it came: its own arrays, never copied into a batch buffer or padded, and its caller gets
the model's own outputs, never split out of a copy (``serving.begin``, on both of its
ways to run a request alone: ``Batcher.run_alone`` and ``Dispatch.run_now``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import numpy as np
import pytest

from keepwarm.batching import PadAxes, ThreadExecutor
from keepwarm.batching.model import BatchedModel
from keepwarm.batching.serving import Queued, begin
from keepwarm.model import LeasedModel
from keepwarm.signature import Signature, TensorSpec


class Kept:
    """A ``LoadedModel`` (input ``x`` float32 [-1, 2, 2]) that keeps what each call was
    handed and what it answered."""

    def __init__(self) -> None:
        f32 = np.dtype("float32")
        self.signature = Signature(
            (TensorSpec("x", f32, (None, 2, 2)),), (TensorSpec("y", f32, (None, 2, 2)),)
        )
        self.nbytes = 0
        self.nbytes_source = "files"
        self.given: list[np.ndarray] = []
        self.answered: list[np.ndarray] = []

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        self.given.append(x)
        y = x + 1
        self.answered.append(y)
        return {"y": y}

    def close(self) -> None:
        pass


@pytest.fixture(params=["run_alone", "run_now"])
def batched(request: pytest.FixtureRequest) -> Iterator[tuple[BatchedModel, Kept]]:
    """An idle ``BatchedModel`` over ``Kept``: its lone requests run alone through
    ``run_alone`` (the in-process default) or, a model that says how many calls it serves
    at once (``slots``: its callers never run alone without the lock), ``run_now``."""
    inner = Kept()
    executor = ThreadExecutor(1)
    model = BatchedModel(
        inner,
        name="kept",
        version=1,
        max_batch_size=8,
        max_delay_ms=0,
        max_queue=4,
        pad_axes=PadAxes(),
        executor=executor,
        slots=1 if request.param == "run_now" else None,
    )
    try:
        yield model, inner
    finally:
        model.close()
        executor.close()


@pytest.mark.parametrize("rows", [1, 4, 8])
def test_a_lone_request_at_its_bucket_reaches_the_model_as_it_came(
    batched: tuple[BatchedModel, Kept], rows: int
) -> None:
    model, inner = batched
    x = np.arange(rows * 4, dtype=np.float32).reshape(rows, 2, 2)
    for _ in range(3):  # the first, and those after it (the runs counted meanwhile)
        with ExitStack() as stack:
            outputs = begin(LeasedModel(model, "kept", 1), {"x": x}, None, stack)
        assert not isinstance(outputs, Queued)
        assert inner.given[-1] is x  # no batch buffer, no padding: the request's array
        assert outputs["y"] is inner.answered[-1]  # no split: the model's own output
        np.testing.assert_array_equal(outputs["y"], x + 1)
    assert len(inner.given) == 3


def test_a_lone_request_between_buckets_is_padded_and_its_rows_answered(
    batched: tuple[BatchedModel, Kept],
) -> None:
    model, inner = batched
    x = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    with ExitStack() as stack:
        outputs = begin(LeasedModel(model, "kept", 1), {"x": x}, None, stack)
    assert not isinstance(outputs, Queued)
    assert inner.given[-1].shape == (4, 2, 2)  # padded to its bucket, a copy
    np.testing.assert_array_equal(outputs["y"], x + 1)
