"""The default eviction policy against the offline optimum and plain LRU on a Zipf stream.

The Manager is driven single-threaded with fake models (equal sizes, ``max_models=5``),
its access order recorded through ``on_access``; Belady and LRU are replayed on that
same order by ``bench/replay.py``. With demand admission (every miss must enter), an
online policy's ceiling on an IID Zipf stream is to keep the most popular keys and churn
one slot: about 0.9x the optimum here; plain LRU reaches about 0.7x.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Hashable
from pathlib import Path

import pytest
from fakes import FakeSpec

from keepwarm.core.manager import Manager
from keepwarm.core.policy import EvictionPolicy, FrequencyPolicy, LRUPolicy

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))

from replay import belady_hits, lru_hits, zipf_stream

KEYS = 20
CAPACITY = 5
REQUESTS = 3000


def drive(policy: EvictionPolicy, seed: int) -> tuple[list[Hashable], int]:
    """Run the stream through a Manager; the order it saw, and the loads it made."""
    # Every unload runs gc.collect() on the manager's reaper thread; freezing the test
    # session's objects keeps those collections (over 1,000 here) from scanning its heap.
    gc.freeze()
    try:
        return _drive(policy, seed)
    finally:
        gc.unfreeze()


def _drive(policy: EvictionPolicy, seed: int) -> tuple[list[Hashable], int]:
    order: list[Hashable] = []
    specs = {f"m{i}": FakeSpec(f"m{i}") for i in range(KEYS)}
    manager = Manager(
        max_models=CAPACITY, policy=policy, on_access=lambda key, hit: order.append(key)
    )
    for index in zipf_stream(REQUESTS, KEYS, 1.0, seed):
        key = f"m{index}"
        manager.acquire(key, specs[key], timeout=10).release()
    manager.close(drain_timeout=1)
    assert len(order) == REQUESTS
    return order, manager.counters["loads"]


@pytest.mark.parametrize("seed", [0, 1])
def test_frequency_policy_near_belady_and_above_lru(seed: int) -> None:
    order, loads = drive(FrequencyPolicy(), seed)
    hits = REQUESTS - loads
    optimum = belady_hits(order, CAPACITY)
    lru = lru_hits(order, CAPACITY)
    assert hits >= 0.85 * optimum, (hits, optimum)
    assert hits >= lru * 1.15, (hits, lru)


def test_lru_policy_matches_the_lru_replay() -> None:
    # Checks the harness: the Manager under LRUPolicy is the replayed LRU, request for request.
    order, loads = drive(LRUPolicy(), 0)
    assert REQUESTS - loads == lru_hits(order, CAPACITY)
