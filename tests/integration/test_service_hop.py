"""A request's hop to a worker thread (``keepwarm.hop`` under ``Leases.hop``) when its
caller goes away: one still waiting for a thread never runs and gives its lease back at
once; one already running gives its lease back when its model returns. A real gated
Python-runtime model, a real repository and service, one worker thread."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from keepwarm.service import InferenceService
from support.gated_model import GATE_TIMEOUT_S, Gate, gated_leases, gated_repository
from support.waiting import WAIT_S, wait_until


@pytest.fixture
def service(tmp_path: Path) -> Iterator[InferenceService]:
    Gate.reset()
    repository = gated_repository(tmp_path)
    made = InferenceService(repository, workers=1)
    try:
        yield made
    finally:
        Gate.open.set()
        made.close()
        repository.close()


def test_callers_that_go_away_give_their_leases_back(service: InferenceService) -> None:
    def infer(value: float) -> asyncio.Future[Any]:
        inputs = {"x": np.full((1, 4), value, np.float32)}
        call = service.infer("gated", None, lambda _: inputs, lambda *out: out, protocol="test")
        return asyncio.ensure_future(call)

    def leases() -> int:
        return gated_leases(service)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        running = infer(1.0)
        assert await loop.run_in_executor(None, Gate.running.acquire, True, GATE_TIMEOUT_S)
        queued = infer(2.0)  # behind the only worker thread
        assert await loop.run_in_executor(None, wait_until, lambda: leases() == 2, WAIT_S)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        assert leases() == 1  # given back at once: it never started
        running.cancel()  # its model runs: the lease stays until the model returns
        with pytest.raises(asyncio.CancelledError):
            await running
        assert leases() == 1
        Gate.open.set()
        assert await loop.run_in_executor(None, wait_until, lambda: leases() == 0, WAIT_S)
        name, version, outputs = await infer(3.0)
        assert (name, version, float(outputs["y"][0, 0])) == ("gated", 1, 3.0)

    asyncio.run(scenario())
    assert Gate.runs == [1.0, 3.0]  # 2 (gone while queued) never ran
