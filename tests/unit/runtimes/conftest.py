"""Runtime test fixtures: the tiny MLP in every format, built once per session."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from runtime_models import Mlp, build_mlp


@pytest.fixture(scope="session")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Mlp:
    return build_mlp(tmp_path_factory.mktemp("mlp"))


@pytest.fixture(scope="session")
def batch() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
