"""Long runs, only in `make stress`: memory given back across load/unload cycles."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest

import keepwarm
from keepwarm.core.memory import rss_bytes
from keepwarm.core.states import State

pytestmark = pytest.mark.stress

CYCLES = 200
SETTLE = 20
LIMIT_MB = 50.0


def test_mobilenet_load_predict_unload_cycles_do_not_grow_memory(example_models: Path) -> None:
    uri = example_models / "mobilenet_v2" / "1"
    cache = keepwarm.ModelCache(warmup=False)
    x = np.random.default_rng(0).random((1, 224, 224, 3), dtype=np.float32)
    reaper = cache.manager._reaper
    rss: list[int] = []
    key = cache.handle(uri)._key
    for _cycle in range(CYCLES):
        cache.load(uri).predict(x)
        assert cache.evict(uri)
        assert cache.manager.wait_for(lambda: cache.manager.state(key) is State.UNLOADED, 30)
        assert reaper.idle.wait(30)
        gc.collect()
        rss.append(rss_bytes())
    growth_mb = (rss[-1] - rss[SETTLE - 1]) / 2**20
    print(
        f"\nRSS after cycle {SETTLE}: {rss[SETTLE - 1] / 2**20:.1f} MB, after cycle {CYCLES}: "
        f"{rss[-1] / 2**20:.1f} MB, growth {growth_mb:.1f} MB (limit {LIMIT_MB} MB)"
    )
    assert cache.stats()["loads"] == CYCLES
    assert growth_mb < LIMIT_MB
