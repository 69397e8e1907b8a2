"""Recycling a worker (the new one loaded first, the old one finishing its call), the
hook around loads and unloads, and the restart and recycle counters in ``/metrics``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_workers_faults import MODELS, Gate, X, _call, _worker

from keepwarm.cache import ModelCache
from keepwarm.settings import Settings
from keepwarm.workers import default_pool
from support.waiting import wait_until


@pytest.fixture
def cache() -> Iterator[ModelCache]:
    cache = ModelCache(settings=Settings.from_env({}), warmup=False)
    yield cache
    cache.close()


def test_recycle_a_busy_worker_loses_no_request(cache: ModelCache, tmp_path: Path) -> None:
    model_dir = tmp_path / "recycled"
    model_dir.mkdir()
    gate = Gate(model_dir)
    try:
        model = cache.load(model_dir, options={"class": f"{MODELS}:Gated"}, workers=True)
        worker = _worker(model)
        (old,) = worker.workers()
        results: dict[str, Any] = {}
        busy = _call(model, results, "busy")
        gate.wait_started()  # the old worker is inside a call
        # the replacement starts and loads; the old one keeps its call
        assert default_pool().recycle(old.worker_id) is True
        states = {info.worker_id: info.state for info in worker.workers()}
        assert states[old.worker_id] == "retiring" and len(states) == 2
        gate.let_one_finish()  # the old worker answers its call, then stops
        busy.join(30)
        np.testing.assert_array_equal(results["busy"], X + 1)
        assert wait_until(lambda: [i.worker_id for i in worker.workers()] != [old.worker_id])
        (new,) = worker.workers()
        assert new.pid != old.pid and new.state == "ready" and new.restarts == 0
        nxt = _call(model, results, "next")
        gate.wait_started()
        gate.let_one_finish()
        nxt.join(30)
        np.testing.assert_array_equal(results["next"], X + 1)
        assert default_pool().counts()["recycled"]["recycles"] >= 1
        assert default_pool().recycle(old.worker_id) is False  # gone: nothing to do
    finally:
        gate.close()


def test_the_hook_runs_in_the_worker_around_loads(cache: ModelCache, tmp_path: Path) -> None:
    from support.worker_models import RecordingHook

    pool = default_pool()
    pool.hook = RecordingHook()
    try:
        model = cache.load(tmp_path, options={"class": f"{MODELS}:Affine"}, workers=True)
    finally:
        pool.hook = None
    (info,) = _worker(model).workers()
    assert set(info.figures) == {"before_load", "after_load"}
    assert info.figures["after_load"]["pid"] == info.pid


def test_restarts_and_recycles_are_exported() -> None:
    from keepwarm.metrics import Metrics
    from keepwarm.workers.metrics import WorkerCollector

    collector = WorkerCollector(lambda: {"m": {"restarts": 2, "recycles": 1}})
    (restarts, recycles) = collector.collect()
    assert restarts.samples[0].name == "keepwarm_worker_restarts_total"
    assert restarts.samples[0].labels == {"model": "m"} and restarts.samples[0].value == 2
    assert recycles.samples[0].name == "keepwarm_worker_recycles_total"
    assert recycles.samples[0].value == 1
    # the server's registry reads the process's pool
    text = Metrics().render().decode()
    assert "# HELP keepwarm_worker_restarts_total" in text
