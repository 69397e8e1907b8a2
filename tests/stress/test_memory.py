"""Long runs, only in `make stress`: memory given back across load/unload cycles.

The run is bounded by time, not by a cycle count alone: it stops after ``CYCLES`` cycles
or once ``TIME_BUDGET_S`` has passed, but never before ``MIN_CYCLES`` (the check needs that
many to see a leak), and carries its own pytest timeout for that worst case. Progress is
printed as it goes (``-s`` shows it live) and the figures are printed even when a check
fails or the run is cut short.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import numpy as np
import pytest

import keepwarm
from keepwarm.core.memory import rss_bytes
from keepwarm.core.states import State

CYCLES = 200
MIN_CYCLES = 80
SETTLE = 20  # RSS is measured from this cycle on: the first ones fill caches and arenas
TIME_BUDGET_S = 300.0
CYCLE_WAIT_S = 30.0
# No more than 50 MB over the whole run, nor a steady climb: a least-squares slope of
# 0.25 MB per cycle (45 MB over 180 measured cycles) is a leak however long the run was.
LIMIT_MB = 50.0
LIMIT_MB_PER_CYCLE = 0.25
PROGRESS_EVERY = 10
# MIN_CYCLES at 8 s each (four times the slowest seen here) after a full time budget.
TIMEOUT_S = TIME_BUDGET_S + MIN_CYCLES * 8

pytestmark = [pytest.mark.stress, pytest.mark.timeout(TIMEOUT_S)]


def growth(rss: list[int]) -> tuple[float, float]:
    """Growth over the measured cycles (MB), and its least-squares slope (MB per cycle)."""
    mb = np.asarray(rss[SETTLE - 1 :], dtype=np.float64) / 2**20
    return float(mb[-1] - mb[0]), float(np.polyfit(np.arange(len(mb)), mb, 1)[0])


def report(rss: list[int], started: float) -> str:
    cycles, elapsed = len(rss), time.monotonic() - started
    if cycles < SETTLE + 2:
        seen = f", RSS {rss[0] / 2**20:.1f} MB to {rss[-1] / 2**20:.1f} MB" if rss else ""
        return f"{cycles} cycles in {elapsed:.0f} s{seen}: too few to measure growth"
    total_mb, per_cycle_mb = growth(rss)
    return (
        f"{cycles} cycles in {elapsed:.0f} s ({elapsed / cycles:.2f} s each); RSS after cycle "
        f"{SETTLE}: {rss[SETTLE - 1] / 2**20:.1f} MB, after cycle {cycles}: "
        f"{rss[-1] / 2**20:.1f} MB, growth {total_mb:.1f} MB (limit {LIMIT_MB:g}), "
        f"slope {per_cycle_mb:.3f} MB/cycle (limit {LIMIT_MB_PER_CYCLE:g})"
    )


def test_mobilenet_load_predict_unload_cycles_do_not_grow_memory(example_models: Path) -> None:
    uri = example_models / "mobilenet_v2" / "1"
    cache = keepwarm.ModelCache(warmup=False)
    x = np.random.default_rng(0).random((1, 224, 224, 3), dtype=np.float32)
    reaper = cache.manager._reaper
    rss: list[int] = []
    key = cache.handle(uri)._key
    started = time.monotonic()
    try:
        while len(rss) < CYCLES and (
            len(rss) < MIN_CYCLES or time.monotonic() - started < TIME_BUDGET_S
        ):
            cache.load(uri).predict(x)
            assert cache.evict(uri)
            assert cache.manager.wait_for(
                lambda: cache.manager.state(key) is State.UNLOADED, CYCLE_WAIT_S
            )
            assert reaper.idle.wait(CYCLE_WAIT_S)
            gc.collect()
            rss.append(rss_bytes())
            if len(rss) % PROGRESS_EVERY == 0:
                print(
                    f"cycle {len(rss)}: {time.monotonic() - started:.0f} s, "
                    f"RSS {rss[-1] / 2**20:.1f} MB",
                    flush=True,
                )
    finally:
        print(report(rss, started), flush=True)
    assert len(rss) >= MIN_CYCLES
    assert cache.stats()["loads"] == len(rss)
    total_mb, per_cycle_mb = growth(rss)
    assert total_mb < LIMIT_MB
    assert per_cycle_mb < LIMIT_MB_PER_CYCLE
