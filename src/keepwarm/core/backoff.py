"""Capped exponential backoff with jitter, for retrying failed loads."""

from __future__ import annotations

import random
from dataclasses import dataclass

from keepwarm.settings import LoadingSettings


@dataclass(frozen=True)
class Backoff:
    initial: float = LoadingSettings.retry_initial
    maximum: float = LoadingSettings.retry_max
    factor: float = 2.0
    jitter: float = 0.2  # +/- this share of the delay

    def delay(self, failures: int, rand: random.Random | None = None) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1-based)."""
        base = min(self.maximum, self.initial * self.factor ** max(0, failures - 1))
        spread = (rand or random).uniform(-self.jitter, self.jitter)
        return max(0.0, min(self.maximum, base * (1.0 + spread)))
