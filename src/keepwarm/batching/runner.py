"""Running one batch: merge, predict, split, timed for the latency table."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from keepwarm.batching.latency import LatencyTable
from keepwarm.batching.merge import Arrays, PadAxes, bucket_for, buckets, merge, split
from keepwarm.errors import escaped

Predict = Callable[[Arrays], Arrays]


@dataclass(slots=True)
class Outcome:
    """What a batch gave: each request's outputs (in order), or ``error``; ``seconds``:
    how long the model took at ``bucket`` (None: not timed), for the latency table.
    ``interrupt``: the ``KeyboardInterrupt`` the model raised (``error`` is then the
    requests' ``InternalError``), for a caller on its own thread to raise again once
    the batch is answered (Ctrl-C is not hidden)."""

    results: list[Arrays]
    bucket: int  # the size the model saw (0: a request that cannot be batched)
    rows: int  # the requests' own rows
    padded: int  # the rows the model saw
    error: Exception | None = None
    seconds: float | None = None
    interrupt: KeyboardInterrupt | None = None

    def deliver(self, futures: list[Future[Arrays]]) -> None:
        """Each future its request's outputs, or the batch's error."""
        if self.error is not None:
            for future in futures:
                future.set_exception(self.error)
            return
        for future, result in zip(futures, self.results, strict=True):
            future.set_result(result)


class BatchRunner:
    """Runs batches of one model. ``crop_axes``: see ``merge.split``; ``latency``: its
    ``cap`` (while larger buckets warm), past which a request runs in pieces."""

    def __init__(
        self,
        predict: Predict,
        name: str,
        max_batch_size: int,
        pad_axes: PadAxes,
        crop_axes: Mapping[str, tuple[int, ...]] | None,
        latency: LatencyTable | None = None,
    ) -> None:
        self.predict = predict
        self.name = name
        self.max_batch_size = max_batch_size
        self.pad_axes = pad_axes
        self.crop_axes = crop_axes
        self.buckets = frozenset(buckets(max_batch_size))
        self._latency = latency

    def run(self, parts: list[Arrays], rows: list[int]) -> Outcome:
        """The outcome of one batch of ``parts`` (each with its ``rows``)."""
        if len(parts) == 1:
            return self.run_one(parts[0], rows[0])
        return self._run_merged(parts, rows, bucket_for(sum(rows), self.max_batch_size))

    def run_one(self, inputs: Arrays, rows: int) -> Outcome:
        """The outcome of one request alone: at a bucket size, as it came (timed); below
        ``max_batch_size``, padded up to its bucket; else (0 rows: it cannot be batched;
        past ``max_batch_size``) as it came, untimed (the latency table has no such size).
        Past the cap while larger buckets warm, in pieces (``run_pieces``)."""
        if self._latency is not None and self._latency.cap < rows <= self.max_batch_size:
            return self.run_pieces(inputs, rows, self._latency.cap)
        if rows in self.buckets:
            try:
                began = time.perf_counter()
                outputs = self.predict(inputs)
                seconds = time.perf_counter() - began
            except BaseException as exc:
                return self.failed(rows, rows, exc)
            return Outcome([outputs], rows, rows, rows, None, seconds)
        if 0 < rows < self.max_batch_size:
            return self._run_merged([inputs], [rows], bucket_for(rows, self.max_batch_size))
        try:
            return Outcome([self.predict(inputs)], rows, rows, rows)
        except BaseException as exc:
            return self.failed(rows, rows, exc)

    def _run_merged(self, parts: list[Arrays], rows: list[int], bucket: int) -> Outcome:
        total, seconds = sum(rows), None
        try:
            merged = merge(parts, bucket, self.pad_axes)
            began = time.perf_counter()
            outputs = self.predict(merged.inputs)
            seconds = time.perf_counter() - began
            results = split(outputs, merged, self.name, self.crop_axes)
            return Outcome(results, bucket, total, merged.padded_rows, None, seconds)
        except BaseException as exc:
            return self.failed(bucket, total, exc, seconds)

    def failed(
        self, bucket: int, rows: int, exc: BaseException, seconds: float | None = None
    ) -> Outcome:
        """A batch whose model raised ``exc``: one that is not an ``Exception``
        (``sys.exit()``, ``GeneratorExit``, ``KeyboardInterrupt``) answers its requests
        with an ``InternalError`` too, so that their futures are answered and the slot is
        given back; a ``KeyboardInterrupt`` is kept for the caller's own thread."""
        if isinstance(exc, Exception):
            return Outcome([], bucket, rows, 0, exc, seconds)
        interrupt = exc if isinstance(exc, KeyboardInterrupt) else None
        return Outcome([], bucket, rows, 0, escaped(self.name, exc), seconds, interrupt)

    def run_pieces(self, inputs: Arrays, rows: int, cap: int) -> Outcome:
        """A request of more than ``cap`` rows while the buckets past ``cap`` warm: run
        ``cap`` rows at a time (each piece at a warm bucket), the outputs joined along the
        batch axis; untimed. Outputs that are not one row per input row, or cannot be
        joined (sizes that vary from piece to piece), are not: the request runs whole."""
        pieces, padded = [], 0
        for start in range(0, rows, cap):
            part = {name: array[start : start + cap] for name, array in inputs.items()}
            size = min(cap, rows - start)
            outcome = self.run_one(part, size)
            if outcome.error is not None:
                return Outcome([], cap, rows, 0, outcome.error, None, outcome.interrupt)
            piece = outcome.results[0]
            if any(np.ndim(a) == 0 or len(a) != size for a in piece.values()):
                return self._run_merged([inputs], [rows], bucket_for(rows, self.max_batch_size))
            pieces.append(piece)
            padded += outcome.padded
        try:
            joined = {name: np.concatenate([p[name] for p in pieces]) for name in pieces[0]}
        except (ValueError, KeyError):
            return self._run_merged([inputs], [rows], bucket_for(rows, self.max_batch_size))
        return Outcome([joined], cap, rows, padded)
