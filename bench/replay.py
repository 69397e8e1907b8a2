"""Replays of a recorded request order through reference caches, for the cache benchmarks.

Pure functions over a sequence of hashable keys, shared by ``bench/multimodel.py`` and
``tests/unit/core/test_policy_replay.py`` (which puts ``bench/`` on ``sys.path``).

Every cache here holds at most ``capacity`` keys of equal size and admits on demand: a
request for a key that is not resident is a miss, and that key must enter (evicting one
resident when full). A request for a resident key is a hit.

- ``belady_hits``: the offline optimum for that model (Belady's MIN): on a miss with a
  full cache, evict the resident whose next request is farthest away (or never comes).
- ``lru_hits``: plain least-recently-used, the online baseline.
- ``zipf_stream``: a seeded, truncated Zipf stream of key indices (rank k has
  probability proportional to ``1 / k**s``, k = 1..n).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Hashable, Sequence

import numpy as np

NEVER = 1 << 62


def zipf_stream(requests: int, keys: int, s: float = 1.0, seed: int = 0) -> list[int]:
    """``requests`` key indices in ``range(keys)``; index 0 is the most popular."""
    ranks = np.arange(1, keys + 1, dtype=np.float64)
    weights = ranks**-s
    rng = np.random.default_rng(seed)
    return [int(i) for i in rng.choice(keys, size=requests, p=weights / weights.sum())]


def next_uses(order: Sequence[Hashable]) -> list[int]:
    """For each position, the position of the next request for the same key (or NEVER)."""
    upcoming: dict[Hashable, int] = {}
    result = [NEVER] * len(order)
    for i in range(len(order) - 1, -1, -1):
        key = order[i]
        result[i] = upcoming.get(key, NEVER)
        upcoming[key] = i
    return result


def belady_hits(order: Sequence[Hashable], capacity: int) -> int:
    """Hits of the offline optimum (Belady's MIN, demand admission) on ``order``."""
    if capacity < 1:
        raise ValueError(f"capacity must be at least 1, got {capacity}")
    following = next_uses(order)
    resident: dict[Hashable, int] = {}  # key -> position of its next request
    heap: list[tuple[int, int]] = []  # (-next use, position that set it): lazy max-heap
    keys_at: dict[int, Hashable] = {}
    hits = 0
    for i, key in enumerate(order):
        if key in resident:
            hits += 1
        elif len(resident) >= capacity:
            while True:  # pop until an entry that is still current
                neg_next, at = heapq.heappop(heap)
                victim = keys_at.pop(at)
                if resident.get(victim) == -neg_next:
                    del resident[victim]
                    break
        resident[key] = following[i]
        heapq.heappush(heap, (-following[i], i))
        keys_at[i] = key
    return hits


def lru_hits(order: Sequence[Hashable], capacity: int) -> int:
    """Hits of plain LRU with ``capacity`` slots on ``order``."""
    if capacity < 1:
        raise ValueError(f"capacity must be at least 1, got {capacity}")
    resident: OrderedDict[Hashable, None] = OrderedDict()
    hits = 0
    for key in order:
        if key in resident:
            hits += 1
            resident.move_to_end(key)
            continue
        if len(resident) >= capacity:
            resident.popitem(last=False)
        resident[key] = None
    return hits
