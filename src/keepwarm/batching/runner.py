"""Running one batch: merge, predict, split, timed into the latency table."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from keepwarm.batching.latency import LatencyTable
from keepwarm.batching.merge import Arrays, PadAxes, bucket_for, merge, split

Predict = Callable[[Arrays], Mapping[str, np.ndarray]]


@dataclass(slots=True)
class Outcome:
    """What a batch gave: each request's outputs (in order), or ``error``."""

    results: list[Arrays]
    bucket: int  # the size the model saw (0: a request that cannot be batched)
    rows: int  # the requests' own rows
    padded: int  # the rows the model saw
    error: Exception | None = None

    def deliver(self, futures: list[Future[Arrays]]) -> None:
        """Each future its request's outputs, or the batch's error."""
        if self.error is not None:
            for future in futures:
                future.set_exception(self.error)
            return
        for future, result in zip(futures, self.results, strict=True):
            future.set_result(result)


@dataclass(frozen=True)
class BatchRunner:
    """Runs batches of one model. ``crop_axes``: see ``merge.split``."""

    predict: Predict
    name: str
    max_batch_size: int
    pad_axes: PadAxes
    crop_axes: Mapping[str, tuple[int, ...]] | None
    latency: LatencyTable

    def run(self, parts: list[Mapping[str, np.ndarray]], rows: list[int]) -> Outcome:
        """The outcome of one batch of ``parts`` (each with its ``rows``; 0: a request
        that cannot be batched, alone)."""
        bucket = 0
        try:
            if rows[0] == 0:
                return Outcome([dict(self.predict(dict(parts[0])))], 0, 0, 0)
            total = sum(rows)
            bucket = bucket_for(total, self.max_batch_size)
            if len(parts) == 1 and total == bucket:  # one request at its bucket: as it came
                return Outcome([dict(self._timed(dict(parts[0]), bucket))], bucket, total, total)
            merged = merge(parts, bucket, self.pad_axes)
            outputs = self._timed(merged.inputs, bucket)
            results = split(outputs, merged, self.name, self.crop_axes)
            return Outcome(results, bucket, total, merged.padded_rows)
        except Exception as exc:
            return Outcome([], bucket, sum(rows), 0, exc)

    def _timed(self, inputs: Arrays, bucket: int) -> Mapping[str, np.ndarray]:
        began = time.perf_counter()
        outputs = self.predict(inputs)
        self.latency.record(bucket, time.perf_counter() - began)
        return outputs
