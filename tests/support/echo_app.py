"""An ``HttpApp`` over a real ``InferenceService`` serving the Python "echo" model (version
1, ``EchoVersion``), for the tests that call the ASGI app in-process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from keepwarm import service_infer
from keepwarm.batching.serving import batched
from keepwarm.http import HttpApp
from keepwarm.repository import Repository
from keepwarm.service import InferenceService
from support.repo_builders import place_python, write_model_toml

READY_S = 30.0


@contextmanager
def echo_app(root: Path, model_toml: str) -> Iterator[HttpApp]:
    """The app over a repository at ``root`` holding "echo" with ``model_toml``."""
    place_python(root / "echo", 1, "EchoVersion")
    write_model_toml(root / "echo", model_toml)
    with Repository(root, allow_unsafe=True, poll_seconds=60) as repository:
        repository.wait_ready("echo", timeout=READY_S)
        service = InferenceService(repository)
        service.started()
        try:
            yield HttpApp(service, max_body_bytes=1 << 24, max_json_depth=8)
        finally:
            service.close()


def always_gathering(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batched model's batcher counts as gathering a batch: each request decoded on the
    loop is queued from there (``service_infer.gathering``)."""
    busy = service_infer.gathering
    monkeypatch.setattr(service_infer, "gathering", lambda model: busy(model) or batched(model))
