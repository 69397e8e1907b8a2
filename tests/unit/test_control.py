"""The repository API's load against a real repository: a model it loads stays held (503,
as before the call) until the repository lists it, never a 404 in between; a model deleted
since the last scan is 404 at once, and one that fails to load is that failure at once:
neither waits out the load timeout."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from keepwarm.control import UNLOADED_BY_API, ControlledSource
from keepwarm.errors import ModelNotFoundError, UnavailableError
from keepwarm.repository import Repository
from keepwarm.service import InferenceService
from keepwarm.settings import Settings
from keepwarm.sources.listing import open_source

TOKEN = "t0ken"


@pytest.fixture
def served(example_models: Path, tmp_path: Path) -> Iterator[tuple[Path, InferenceService]]:
    root = tmp_path / "models"
    shutil.copytree(example_models / "mlp_onnx", root / "m")
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "saved_model.pb").write_bytes(b"not a protobuf")
    control = ControlledSource(open_source(str(root), Settings().downloads), "poll")
    repository = Repository(root, source=control, watch=False, poll_seconds=3600)
    # a short load timeout: a load that waits for a model not listed fails the test soon
    service = InferenceService(repository, control=control, management_token=TOKEN, load_timeout=5)
    try:
        repository.start()
        repository.refresh()
        repository.wait_ready("m", None, 60)
        service.management.unload_blocking("m", TOKEN)
        yield root, service
    finally:
        service.close()


def test_a_model_the_api_loads_stays_held_until_the_repository_lists_it(
    served: tuple[Path, InferenceService],
) -> None:
    _, service = served
    control = service.management.authorize(TOKEN)
    assert service.held("m") == UNLOADED_BY_API
    control.load("m")  # the API's load, before the repository has scanned again
    # not released to the repository yet, which does not list "m": a request now would be
    # its 404 ("not found in the repository") for a model on disk being loaded
    assert service.held("m") == UNLOADED_BY_API
    service.management.load_blocking("m", TOKEN)
    assert service.held("m") is None
    assert service.model_ready("m", None)


def test_loading_a_model_deleted_since_the_last_scan_is_not_found(
    served: tuple[Path, InferenceService],
) -> None:
    root, service = served
    shutil.rmtree(root / "m")
    with pytest.raises(ModelNotFoundError, match="model 'm' is not in the repository"):
        service.management.load_blocking("m", TOKEN)


def test_loading_a_model_that_fails_to_load_says_why_at_once(
    served: tuple[Path, InferenceService],
) -> None:
    _, service = served
    service.management.unload_blocking("broken", TOKEN)
    with pytest.raises(UnavailableError) as failed:
        service.management.load_blocking("broken", TOKEN)
    # the load's own failure, not a wait of the load timeout for a retry, then the
    # repository's status of the model as Python
    assert "FAILED" in failed.value.message and "saved_model.pb" in failed.value.message
    assert "within" not in failed.value.message and "{" not in failed.value.message
