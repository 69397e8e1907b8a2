"""Fixtures of the integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.repo_builders import Probe, build_echo_savedmodels

ECHO_VERSIONS = 21


@pytest.fixture(scope="session")
def echo_models(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """SavedModels 1..21 whose output ``version`` is their version number."""
    return build_echo_savedmodels(tmp_path_factory.mktemp("echo"), range(1, ECHO_VERSIONS + 1))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty model repository directory."""
    path = tmp_path / "models"
    path.mkdir()
    return path


@pytest.fixture
def probe() -> type[Probe]:
    """The probe models' record, empty; any gate is opened at the end."""
    Probe.reset()
    yield Probe
    Probe.gate.set()
