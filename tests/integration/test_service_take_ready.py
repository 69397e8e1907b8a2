"""``Leases.take_ready``: a request's lease taken with no await when its version is READY
now; anything else (unknown model or version, a model the repository API holds, a bad
version) is left to ``take``, whose error the request gets, as before. A real
repository with a READY Python-runtime model."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from keepwarm.errors import InvalidInputError, ModelNotFoundError, UnavailableError
from keepwarm.hop import HopPool
from keepwarm.repository import Repository
from keepwarm.service import InferenceService
from keepwarm.service_errors import Scrubber
from keepwarm.service_leases import Leases
from support.gated_model import Gate, gated_leases, gated_repository


@pytest.fixture
def repository(tmp_path: Path) -> Iterator[Repository]:
    Gate.reset()
    Gate.open.set()
    made = gated_repository(tmp_path)
    try:
        yield made
    finally:
        made.close()


def leases(repository: Repository, held: str | None = None) -> Leases:
    return Leases(
        repository,
        HopPool(1, "test_take_ready"),
        Scrubber(str(repository.root)),
        held=lambda name: held,
        default_timeout=5.0,
        load_timeout=5.0,
    )


def test_a_ready_version_is_leased_at_once_with_its_deadline(repository: Repository) -> None:
    ready = leases(repository)
    before = time.monotonic()
    for version, timeout in ((None, None), ("1", 2.0)):
        taken = ready.take_ready("gated", version, timeout)
        assert taken is not None
        lease, deadline = taken
        assert lease.model.version == 1
        assert deadline is not None
        assert before + (timeout or 5.0) <= deadline <= time.monotonic() + (timeout or 5.0)
        lease.release()
    entry = repository.status().models["gated"].versions[1].manager
    assert entry is not None and entry.leases == 0


@pytest.mark.parametrize(
    ("name", "version", "error"),
    [
        ("nope", None, ModelNotFoundError),
        ("gated", "7", ModelNotFoundError),
        ("gated", "0", InvalidInputError),
        ("gated", "bad/label", InvalidInputError),
    ],
)
def test_what_is_not_ready_is_left_to_take_and_its_error(
    repository: Repository, name: str, version: str | None, error: type[Exception]
) -> None:
    ready = leases(repository)
    assert ready.take_ready(name, version, 0.2) is None
    with pytest.raises(error):
        asyncio.run(ready.take(name, version, 0.2))


def test_a_held_model_is_left_to_take_which_refuses_it(repository: Repository) -> None:
    held = leases(repository, held="unloaded through the repository API")
    assert held.take_ready("gated", None, None) is None
    with pytest.raises(UnavailableError, match="unloaded through the repository API"):
        asyncio.run(held.take("gated", None, None))


def test_a_request_gives_its_lease_back_after_the_lease_taken_at_once(
    repository: Repository,
) -> None:
    service = InferenceService(repository, workers=1)
    try:
        inputs = {"x": np.full((1, 4), 2.0, np.float32)}
        call = service.infer("gated", None, lambda _: inputs, lambda *out: out, protocol="t")
        name, version, outputs = asyncio.run(call)
        assert (name, version, float(outputs["y"][0, 0])) == ("gated", 1, 2.0)
        assert gated_leases(service) == 0
    finally:
        service.close()
