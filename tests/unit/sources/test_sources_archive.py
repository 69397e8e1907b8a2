"""Safe extraction of model archives."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from keepwarm.errors import DownloadError
from keepwarm.settings import DownloadSettings
from keepwarm.sources.archive import safe_extract

_CAP = DownloadSettings().max_extract_bytes


def _tar(path: Path, members: list[tuple[str, bytes | None, str | None]]) -> Path:
    """Write a .tar.gz of (name, file bytes or None, link target or None) members: a link is
    a symlink, or a hard link when its name is ``h``; a member named ``fifo`` is a fifo."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type = tarfile.LNKTYPE if name == "h" else tarfile.SYMTYPE
                info.linkname = link
                tar.addfile(info)
            elif name == "fifo":
                info.type = tarfile.FIFOTYPE
                tar.addfile(info)
            else:
                payload = data or b""
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return path


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ([("../evil.txt", b"x", None)], "'../evil.txt': .*outside the destination"),
        ([("model/../../evil.txt", b"x", None)], "'model/../../evil.txt': .*outside"),
        ([("/tmp/evil.txt", b"x", None)], "'/tmp/evil.txt': absolute path"),
        ([("C:/evil.txt", b"x", None)], "'C:/evil.txt': absolute path"),
        ([("link", None, "/etc/passwd")], "'link': .*link to an absolute path"),
        ([("sub/link", None, "../../outside")], "'sub/link': .*outside the destination"),
        ([("h", None, "../x")], "'h': .*outside the destination"),
        ([("fifo", None, None)], "'fifo': .*special file"),
    ],
    ids=[
        "dotdot",
        "nested-dotdot",
        "absolute",
        "drive",
        "abs-symlink",
        "escaping-symlink",
        "escaping-hardlink",
        "fifo",
    ],
)
def test_unsafe_members_are_refused(tmp_path: Path, members, reason: str) -> None:
    archive = _tar(tmp_path / "evil.tar.gz", [("ok.txt", b"fine", None), *members])
    dest = tmp_path / "deep" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(DownloadError, match=f"unsafe archive member {reason}"):
        safe_extract(archive, dest, max_bytes=_CAP)
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
    safe_extract(archive, dest, max_bytes=_CAP)
    assert (dest / "alias").read_bytes() == b"abc"


def test_empty_archive_is_an_error(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "empty.tar.gz", [])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(DownloadError, match="empty"):
        safe_extract(archive, dest, max_bytes=_CAP)


def test_a_chain_of_links_out_of_the_destination_is_refused_as_unsafe(tmp_path: Path) -> None:
    # Each link alone looks harmless: d/x -> .. is d's parent, the root; but d/x/y -> ..
    # then lands above the root. Only the disk (after d/x exists) shows the escape.
    archive = _tar(
        tmp_path / "chain.tar.gz",
        [("d/ok.txt", b"fine", None), ("d/x", None, ".."), ("d/x/y", None, "..")],
    )
    dest = tmp_path / "deep" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(DownloadError, match=r"unsafe archive member 'd/x/y'") as info:
        safe_extract(archive, dest, max_bytes=_CAP)
    assert "truncated or corrupt" not in str(info.value)
    assert not (tmp_path / "deep" / "y").exists() and not (dest / "y").is_symlink()


def test_an_archive_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    archive = _tar(
        tmp_path / "big.tar.gz", [("a.bin", bytes(600), None), ("b.bin", bytes(600), None)]
    )
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(DownloadError, match=r"more than 1000 bytes.*'b\.bin'"):
        safe_extract(archive, dest, what="https://h/big.tar.gz", max_bytes=1000)
    assert list(dest.iterdir()) == []
    safe_extract(archive, dest, max_bytes=1200)  # exactly at the cap is fine
    assert (dest / "b.bin").stat().st_size == 600
    assert DownloadSettings().max_extract_bytes == 8 << 30  # the default cap
