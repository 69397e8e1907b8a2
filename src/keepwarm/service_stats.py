"""Triton's statistics extension: per-version request counts and durations.

A successful request's time is split as Triton splits it, so that ``perf_analyzer`` (which
needs every request counted in ``queue`` and equal ``compute_*`` counts) can read it:
``queue`` from the request's arrival at the service until its work began on a worker
thread (the lease, the hop to the thread), ``compute_input`` decoding its inputs,
``compute_infer`` the model (for a request that waited for its batch, the wait included),
``compute_output`` encoding the answer.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any


class Timing:
    """Where one request's time went, in ``perf_counter`` seconds: each stage is the
    ``lap()`` since the one before, the first since ``started``. (A plain class: one is
    made per request.)"""

    __slots__ = ("_mark", "compute_infer", "compute_input", "compute_output", "queue", "started")

    def __init__(self, started: float) -> None:
        self.started = self._mark = started
        self.queue = self.compute_input = self.compute_infer = self.compute_output = 0.0

    def lap(self) -> float:
        """Seconds since the last lap (or the start)."""
        now = time.perf_counter()
        took, self._mark = now - self._mark, now
        return took


@dataclass(slots=True)
class _Stat:
    """Triton-style counters of one version (durations in nanoseconds)."""

    success: int = 0
    success_ns: int = 0
    fail: int = 0
    fail_ns: int = 0
    queue_ns: int = 0
    input_ns: int = 0
    infer_ns: int = 0
    output_ns: int = 0
    last_ms: int = 0

    def to_dict(self, name: str, version: str) -> dict[str, Any]:
        def duration(ns: int, count: int | None = None) -> dict[str, int]:
            return {"count": self.success if count is None else count, "ns": ns}

        return {
            "name": name,
            "version": version,
            "last_inference": self.last_ms,
            "inference_count": self.success,
            "execution_count": self.success,
            "inference_stats": {
                "success": duration(self.success_ns),
                "fail": duration(self.fail_ns, self.fail),
                "queue": duration(self.queue_ns),
                "compute_input": duration(self.input_ns),
                "compute_infer": duration(self.infer_ns),
                "compute_output": duration(self.output_ns),
                "cache_hit": duration(0, 0),
                "cache_miss": duration(0, 0),
            },
            "batch_stats": [],
        }


class Statistics:
    """Counts per (model, version); read by the statistics endpoints. Recorded from any
    thread (the event loop's, the gRPC server's)."""

    def __init__(self) -> None:
        self._stats: dict[tuple[str, str], _Stat] = {}
        self._lock = threading.Lock()

    def record(self, name: str, version: str, seconds: float, timing: Timing | None = None) -> None:
        """One request: a success with its ``timing``, a failure without."""
        ns = int(seconds * 1e9)
        with self._lock:
            self._add(name, version, ns, timing)

    def _add(self, name: str, version: str, ns: int, timing: Timing | None) -> None:
        stat = self._stats.get((name, version))
        if stat is None:
            stat = self._stats[(name, version)] = _Stat()
        if timing is not None:
            stat.success += 1
            stat.success_ns += ns
            stat.queue_ns += int(timing.queue * 1e9)
            stat.input_ns += int(timing.compute_input * 1e9)
            stat.infer_ns += int(timing.compute_infer * 1e9)
            stat.output_ns += int(timing.compute_output * 1e9)
        else:
            stat.fail += 1
            stat.fail_ns += ns
        stat.last_ms = int(time.time() * 1000)

    def rows(self, keys: list[tuple[str, str]]) -> list[dict[str, Any]]:
        with self._lock:
            return [self._stats.get(key, _Stat()).to_dict(*key) for key in keys]
