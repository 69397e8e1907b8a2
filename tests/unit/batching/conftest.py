"""The batching tests' executor: one batch thread (a module may define its own)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from keepwarm.batching import ThreadExecutor


@pytest.fixture
def executor() -> Iterator[ThreadExecutor]:
    pool = ThreadExecutor(1)
    yield pool
    pool.close()
