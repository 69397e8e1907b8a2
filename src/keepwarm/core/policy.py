"""Eviction policies: which idle, unpinned model to unload when the budget needs room.

The default, ``FrequencyPolicy``, keeps a decaying access count per key, kept also for
keys that are not loaded (so a popular model that was evicted once comes back with its
history), and evicts the candidate with the fewest expected hits per byte it holds,
least recently used among equals. On a skewed (Zipf) stream this keeps the popular set
loaded, where plain LRU lets one burst of rare models push it out.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Candidate:
    key: Hashable
    nbytes: int
    last_used: float


class EvictionPolicy(Protocol):
    def record(self, key: Hashable) -> None:
        """One access to ``key`` (hit or miss). Called under the manager's lock: keep it O(1)."""
        ...

    def victim(self, candidates: Sequence[Candidate]) -> Candidate:
        """The candidate to evict; ``candidates`` is never empty."""
        ...

    def prefer_keeping(self, victim: Candidate, newcomer: Candidate) -> bool:
        """True when ``victim`` is worth more than ``newcomer``: while other loads are in
        flight, the newcomer then waits for one of them rather than evict ``victim``."""
        ...


class LRUPolicy:
    """Least recently used: the baseline."""

    def record(self, key: Hashable) -> None:
        pass

    def victim(self, candidates: Sequence[Candidate]) -> Candidate:
        return min(candidates, key=lambda c: c.last_used)

    def prefer_keeping(self, victim: Candidate, newcomer: Candidate) -> bool:
        return False


class FrequencyPolicy:
    """Frequency-aware, size-aware eviction with aging (see the module docstring).

    Every ``window`` accesses all counts are halved, so popularity that moved on fades;
    at most ``history`` keys are remembered (the least recently seen are forgotten).
    """

    def __init__(self, window: int = 2000, history: int = 10_000) -> None:
        self._counts: OrderedDict[Hashable, float] = OrderedDict()
        self._window = window
        self._history = history
        self._since_decay = 0

    def record(self, key: Hashable) -> None:
        counts = self._counts
        counts[key] = counts.get(key, 0.0) + 1.0
        counts.move_to_end(key)
        if len(counts) > self._history:
            counts.popitem(last=False)
        self._since_decay += 1
        if self._since_decay >= self._window:
            self._since_decay = 0
            for k in counts:
                counts[k] /= 2.0

    def count(self, key: Hashable) -> float:
        return self._counts.get(key, 0.0)

    def score(self, candidate: Candidate) -> float:
        """Expected hits per byte held."""
        return self.count(candidate.key) / max(candidate.nbytes, 1)

    def victim(self, candidates: Sequence[Candidate]) -> Candidate:
        return min(candidates, key=lambda c: (self.score(c), c.last_used))

    def prefer_keeping(self, victim: Candidate, newcomer: Candidate) -> bool:
        return self.score(victim) > self.score(newcomer)
