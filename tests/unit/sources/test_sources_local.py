"""Local paths, file:// URLs, and the import hygiene of keepwarm.sources."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from keepwarm.errors import ModelNotFoundError
from keepwarm.sources.resolve import resolve_uri


def test_absolute_path(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    assert resolve_uri(str(tmp_path / "model")) == tmp_path / "model"


def test_relative_path_becomes_absolute(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "model.onnx").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    path = resolve_uri("model.onnx")
    assert path.is_absolute()
    assert path == tmp_path / "model.onnx"


def test_home_is_expanded(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    assert resolve_uri("~/models") == tmp_path / "models"


def test_file_url(tmp_path: Path) -> None:
    model = tmp_path / "my model"
    model.mkdir()
    assert resolve_uri(model.as_uri()) == model
    assert resolve_uri(f"file://{tmp_path}/my%20model") == model


def test_missing_path_lists_near_names(tmp_path: Path) -> None:
    for name in ("mobilenet_v2", "mobilenet_v3", "resnet50"):
        (tmp_path / name).mkdir()
    with pytest.raises(ModelNotFoundError) as info:
        resolve_uri(str(tmp_path / "mobilenet_v1"))
    message = str(info.value)
    assert str(tmp_path / "mobilenet_v1") in message
    assert "mobilenet_v2" in message
    assert "mobilenet_v3" in message
    assert "resnet50" not in message


def test_missing_parent(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="nor does its directory"):
        resolve_uri(f"file://{tmp_path}/nope/model")


def test_empty_uri() -> None:
    with pytest.raises(ValueError, match="empty"):
        resolve_uri(" ")


def test_sources_import_no_framework_and_fsspec_lazily() -> None:
    code = textwrap.dedent(
        """
        import sys
        import keepwarm.sources.archive, keepwarm.sources.cache, keepwarm.sources.download
        import keepwarm.sources.resolve
        lazy = [m for m in sys.modules if m.split(".")[0] in ("fsspec", "s3fs")]
        import keepwarm.sources.remote
        lazy += [m for m in sys.modules if m.split(".")[0] in ("fsspec", "s3fs")]
        heavy = [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "torch")]
        print(repr((heavy, lazy)))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "([], [])"
