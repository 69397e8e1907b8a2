"""Triton's statistics extension: per-version request counts and durations."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class _Stat:
    """Triton-style counters of one version (durations in nanoseconds)."""

    success: int = 0
    success_ns: int = 0
    fail: int = 0
    fail_ns: int = 0
    last_ms: int = 0

    def to_dict(self, name: str, version: str) -> dict[str, Any]:
        def duration(count: int, ns: int) -> dict[str, int]:
            return {"count": count, "ns": ns}

        zero = duration(0, 0)
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_ms,
            "inference_count": self.success,
            "execution_count": self.success,
            "inference_stats": {
                "success": duration(self.success, self.success_ns),
                "fail": duration(self.fail, self.fail_ns),
                "queue": zero,
                "compute_input": zero,
                "compute_infer": duration(self.success, self.success_ns),
                "compute_output": zero,
                "cache_hit": zero,
                "cache_miss": zero,
            },
            "batch_stats": [],
        }


class Statistics:
    """Counts per (model, version); read by the statistics endpoints."""

    def __init__(self) -> None:
        self._stats: dict[tuple[str, str], _Stat] = {}

    def record(self, name: str, version: str, ok: bool, seconds: float) -> None:
        stat = self._stats.get((name, version))
        if stat is None:
            stat = self._stats[(name, version)] = _Stat()
        ns = int(seconds * 1e9)
        if ok:
            stat.success += 1
            stat.success_ns += ns
        else:
            stat.fail += 1
            stat.fail_ns += ns
        stat.last_ms = int(time.time() * 1000)

    def rows(self, keys: list[tuple[str, str]]) -> list[dict[str, Any]]:
        return [self._stats.get(key, _Stat()).to_dict(*key) for key in keys]
