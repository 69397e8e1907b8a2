"""An ``HttpApp`` over an empty repository (a well-formed name is routed, then not found)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from keepwarm.http import HttpApp
from keepwarm.repository import Repository
from keepwarm.service import InferenceService


@pytest.fixture
def app(tmp_path: Path) -> Iterator[HttpApp]:
    (tmp_path / "models").mkdir()
    repository = Repository(tmp_path / "models")
    service = InferenceService(repository)
    service.started()
    try:
        yield HttpApp(service, max_body_bytes=1024, max_json_depth=8)
    finally:
        service.close()
        repository.close()
