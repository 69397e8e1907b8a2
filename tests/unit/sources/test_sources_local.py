"""Local paths, file:// URLs, and the import hygiene of keepwarm.sources."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from keepwarm.errors import InvalidInputError, ModelNotFoundError
from keepwarm.sources.resolve import local_path_or_none, resolve_uri


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
        import keepwarm.sources.archive, keepwarm.sources.download_cache
        import keepwarm.sources.download, keepwarm.sources.held
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


class TestLocalPathOrNone:
    def test_relative_path_is_made_absolute(self, tmp_path: Path, monkeypatch) -> None:
        monkeypatch.chdir(tmp_path)
        assert local_path_or_none("models/a") == tmp_path / "models" / "a"

    def test_home_is_expanded(self, tmp_path: Path, monkeypatch) -> None:
        monkeypatch.setenv("HOME", str(tmp_path))
        assert local_path_or_none("~/m") == tmp_path / "m"

    def test_path_like(self, tmp_path: Path) -> None:
        assert local_path_or_none(tmp_path / "m") == tmp_path / "m"

    def test_file_url_is_percent_decoded(self) -> None:
        assert local_path_or_none("file:///a%20b/c") == Path("/a b/c")

    def test_file_localhost(self) -> None:
        assert local_path_or_none("file://localhost/x") == Path("/x")

    def test_file_url_of_another_host_is_refused(self) -> None:
        with pytest.raises(InvalidInputError, match="host"):
            local_path_or_none("file://elsewhere/x")

    @pytest.mark.parametrize(
        "uri", ["s3://b/k", "http://h/m.tar.gz", "https://h/m", "gs://b/k", "hf://org/m"]
    )
    def test_remote_urls_are_none(self, uri: str) -> None:
        assert local_path_or_none(uri) is None

    @pytest.mark.skipif(sys.platform == "win32", reason="a drive letter on Windows")
    def test_one_letter_scheme_is_a_drive_only_on_windows(self) -> None:
        assert local_path_or_none("c://x") is None

    def test_does_not_need_to_exist(self, tmp_path: Path) -> None:
        assert local_path_or_none(str(tmp_path / "nope")) == tmp_path / "nope"
