"""Fixtures shared by every test: the example models, and an isolated keepwarm cache."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path

import pytest

from keepwarm.examples import build_examples

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / ".test-cache" / "examples"


@pytest.fixture(scope="session")
def example_models() -> Path:
    """The example model repository (``<name>/<version>/``), built once and reused
    across sessions while the builder's hash matches."""
    return build_examples(EXAMPLES)


@pytest.fixture(scope="session")
def example_hub_tarball(example_models: Path) -> Path:
    """The MLP SavedModel packed as TF Hub serves it (``mlp.tar.gz``)."""
    return example_models.parent / "hub" / "mlp.tar.gz"


@pytest.fixture(autouse=True)
def _isolated_keepwarm_env(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test gets its own empty download cache, and is online unless it says otherwise."""
    monkeypatch.setenv("KEEPWARM_CACHE_DIR", str(tmp_path_factory.mktemp("keepwarm-cache")))
    monkeypatch.delenv("KEEPWARM_OFFLINE", raising=False)
