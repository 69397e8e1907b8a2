"""Fixtures of the worker-process tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from keepwarm.cache import ModelCache
from keepwarm.settings import Settings


@pytest.fixture
def no_retry_cache() -> Iterator[Callable[[int], ModelCache]]:
    """Makes a ``ModelCache`` with ``max_restarts`` as given, whose FAILED loads are not
    retried within a test; each is closed at the test's end."""
    made: list[ModelCache] = []

    def make(max_restarts: int) -> ModelCache:
        settings = Settings.from_env(
            {}, max_restarts=max_restarts, retry_initial=600, retry_max=600
        )
        made.append(ModelCache(settings=settings, warmup=False))
        return made[-1]

    yield make
    for cache in made:
        cache.close()
