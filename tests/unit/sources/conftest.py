"""Fixtures for sources tests: a fake SavedModel, tarballs, and a loopback HTTP server."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from checkpoint_index import write_checkpoint_index

from support.http_server import FakeServer, serve

GATE_TIMEOUT_S = 30.0


def write_savedmodel(root: Path, *, shards: int = 1, seed: bytes = b"w") -> Path:
    """A SavedModel-shaped directory: a real-format ``variables.index`` whose shards are
    whole (the runtime's completeness check passes); the graph is not real TensorFlow data."""
    (root / "variables").mkdir(parents=True, exist_ok=True)
    (root / "saved_model.pb").write_bytes(b"\x08\x01fake-graph-" + seed)
    sizes = [len(seed) * (100 + i) for i in range(shards)]
    write_checkpoint_index(root / "variables" / "variables.index", sizes)
    for i in range(shards):
        shard = root / "variables" / f"variables.data-{i:05d}-of-{shards:05d}"
        shard.write_bytes(seed * (100 + i))
    return root


def targz_bytes(src: Path, *, arcname: str = ".") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(src, arcname=arcname)
    return buffer.getvalue()


@pytest.fixture
def savedmodel_dir(tmp_path: Path) -> Path:
    return write_savedmodel(tmp_path / "src-model")


@pytest.fixture
def savedmodel_targz(savedmodel_dir: Path) -> bytes:
    return targz_bytes(savedmodel_dir)


@pytest.fixture
def http_server() -> Iterator[FakeServer]:
    with serve() as fake:
        yield fake


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache dir; the environment cannot point elsewhere or force offline mode."""
    monkeypatch.delenv("KEEPWARM_CACHE_DIR", raising=False)
    monkeypatch.delenv("KEEPWARM_OFFLINE", raising=False)
    return tmp_path / "cache"


@pytest.fixture
def make_savedmodel() -> Callable[..., Path]:
    return write_savedmodel


@pytest.fixture
def make_targz() -> Callable[..., bytes]:
    return targz_bytes
