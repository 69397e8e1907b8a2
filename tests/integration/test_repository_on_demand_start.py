"""An on-demand repository asked for a model before its files are taken (they are taken
when unchanged across two scans): the request is told to retry (``UnavailableError``), or
with a timeout waits and gets the model. It was ``ModelNotFoundError`` ("has no ready
version", a 404 to a server's client) at once, whatever the timeout, for a model on disk."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from keepwarm.errors import UnavailableError
from keepwarm.repository import Repository


def test_a_request_before_the_files_are_taken_waits_with_a_timeout(
    tmp_path: Path, example_models: Path
) -> None:
    root = tmp_path / "models"
    shutil.copytree(example_models / "mlp_onnx", root / "mlp_onnx")
    # Scans 2 s apart: the first sees the files, the second (2 s later) takes them.
    with Repository(root, on_demand=True, poll_seconds=2.0, watch=False) as repo:
        version = repo.status().models["mlp_onnx"].versions[1]
        assert version.disk.value == "waiting for files", version
        with pytest.raises(UnavailableError, match="waiting for files"):
            repo.acquire("mlp_onnx")
        with pytest.raises(UnavailableError):
            repo.acquire("mlp_onnx", 1)
        lease = repo.acquire("mlp_onnx", timeout=60.0)
        try:
            assert lease.model.version == 1
        finally:
            lease.release()
