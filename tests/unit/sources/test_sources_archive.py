"""Safe extraction and the framework-free SavedModel completeness check."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from keepwarm.errors import DownloadError
from keepwarm.sources.archive import safe_extract, savedmodel_incomplete


def _tar(path: Path, members: list[tuple[str, bytes | None, str | None]]) -> Path:
    """Write a .tar.gz of (name, file bytes or None, symlink target or None) members."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type = tarfile.SYMTYPE
                info.linkname = link
                tar.addfile(info)
            else:
                payload = data or b""
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return path


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ([("../evil.txt", b"x", None)], "'..'"),
        ([("model/../../evil.txt", b"x", None)], "'..'"),
        ([("/tmp/evil.txt", b"x", None)], "absolute"),
        ([("link", None, "/etc/passwd")], "symlink"),
        ([("sub/link", None, "../../outside")], "symlink"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "abs-symlink", "escaping-symlink"],
)
def test_unsafe_members_are_refused(tmp_path: Path, members, reason: str) -> None:
    archive = _tar(tmp_path / "evil.tar.gz", [("ok.txt", b"fine", None), *members])
    dest = tmp_path / "deep" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(DownloadError, match=reason):
        safe_extract(archive, dest)
    assert list(dest.iterdir()) == []  # refused before anything was written
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "deep" / "evil.txt").exists()


def test_links_inside_the_archive_are_kept(tmp_path: Path) -> None:
    archive = _tar(
        tmp_path / "ok.tar.gz",
        [("data/a.bin", b"abc", None), ("alias", None, "data/a.bin")],
    )
    dest = tmp_path / "dest"
    dest.mkdir()
    safe_extract(archive, dest)
    assert (dest / "alias").read_bytes() == b"abc"


def test_empty_archive_is_an_error(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "empty.tar.gz", [])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(DownloadError, match="empty"):
        safe_extract(archive, dest)


def test_complete_savedmodel(tmp_path: Path, make_savedmodel) -> None:
    assert savedmodel_incomplete(make_savedmodel(tmp_path / "m", shards=3)) is None


def test_savedmodel_without_variables_is_complete(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(b"graph")
    assert savedmodel_incomplete(tmp_path) is None


@pytest.mark.parametrize(
    ("remove", "expected"),
    [
        ("saved_model.pb", "no saved_model.pb"),
        ("variables/variables.index", "variables.index is missing"),
        ("variables/variables.data-00001-of-00003", "missing 1 of 3 shards"),
        ("variables/variables.data-00000-of-00003", "variables.data-00000-of-00003"),
    ],
)
def test_incomplete_savedmodel(tmp_path: Path, make_savedmodel, remove: str, expected) -> None:
    model = make_savedmodel(tmp_path / "m", shards=3)
    (model / remove).unlink()
    reason = savedmodel_incomplete(model)
    assert reason is not None
    assert expected in reason


def test_index_without_any_shard(tmp_path: Path, make_savedmodel) -> None:
    model = make_savedmodel(tmp_path / "m")
    (model / "variables" / "variables.data-00000-of-00001").unlink()
    assert "no variables.data" in (savedmodel_incomplete(model) or "")


def test_empty_graph_file(tmp_path: Path, make_savedmodel) -> None:
    model = make_savedmodel(tmp_path / "m")
    (model / "saved_model.pb").write_bytes(b"")
    assert "empty" in (savedmodel_incomplete(model) or "")


def test_not_a_directory(tmp_path: Path) -> None:
    assert "not a directory" in (savedmodel_incomplete(tmp_path / "nope") or "")
