"""What the package's metadata promises its installers."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def test_the_tensorflow_extra_keeps_ml_dtypes_off_its_slow_import() -> None:
    """ml_dtypes 0.7.0 added ~0.65 s of CPU to every TensorFlow import (the cold start
    of ``keepwarm serve``); an install without constraints.txt must not pick it."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    bound = {Requirement(r).name: Requirement(r).specifier for r in extras["tensorflow"]}
    spec = bound["ml_dtypes"]
    assert "0.5.4" in spec and "0.7.0" not in spec
    pinned = [
        line.split("==")[1].strip()
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line.lower().replace("-", "_").startswith("ml_dtypes==")
    ]
    assert pinned and all(version in spec for version in pinned)
