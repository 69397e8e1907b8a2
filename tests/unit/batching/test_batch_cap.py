"""``Batcher.cap_batches``: while larger buckets warm, no batch is formed past the cap and a
request of more rows runs in pieces at warm sizes; results are exact (``RowModel``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest

from keepwarm.batching import Batcher, ThreadExecutor
from support.batch_models import RowModel


@pytest.fixture
def executor() -> Iterator[ThreadExecutor]:
    pool = ThreadExecutor(1)
    yield pool
    pool.close()


def _x(value: float, rows: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.arange(rows * 3, dtype=np.float32).reshape(rows, 3) + value}


def test_gathered_batches_stop_at_the_cap_and_a_larger_request_runs_in_pieces(
    executor: ThreadExecutor,
) -> None:
    gate = threading.Event()
    model = RowModel(gate)
    batcher = Batcher(model.predict, name="m", executor=executor, max_batch_size=8, max_delay_ms=0)
    batcher.cap_batches(2)
    first = batcher.submit(_x(0))
    assert model.entered.wait(10)  # the slot is busy: the others gather behind it
    later = [batcher.submit(_x(v)) for v in (1, 2, 3)] + [batcher.submit(_x(4, 7))]
    gate.set()
    results = [f.result(30) for f in [first, *later]]
    # [0]; [1 2] (a third row would pass the cap); [3]; then 7 rows as 2 + 2 + 2 + 1.
    assert model.calls == [1, 2, 1, 2, 2, 2, 1]
    for value, (rows, result) in enumerate(zip((1, 1, 1, 1, 7), results, strict=True)):
        assert result["x_echo"].tolist() == (2 * _x(value, rows)["x"]).tolist()
    assert results[-1]["x_sum"].tolist() == _x(4, 7)["x"].sum(axis=1).tolist()
    batcher.cap_batches(None)  # every bucket warm: 7 rows padded to 8, one call
    assert batcher.predict(_x(5, 7), timeout=30)["x_echo"].shape == (7, 3)
    assert model.calls[-1] == 8
    batcher.close()
