"""The download cache's bound: least recently used entries that nothing uses are evicted,
entries in use (in this process or another) stay, and entries whose files fail to load are
dropped. Real archives over a loopback HTTP server; real models."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

import keepwarm
from keepwarm.errors import DownloadError, ModelLoadError, UnsafeFormatError
from keepwarm.settings import DownloadSettings, Settings
from keepwarm.sources.cache_bound import enforce_bound
from keepwarm.sources.download import fetch_archive
from keepwarm.sources.download_cache import CacheEntry, cache_key
from keepwarm.sources.resolve import resolve_uri
from support.http_server import FakeServer

KiB = 1 << 10
MiB = 1 << 20
ZEROS = 256 * MiB  # what the "archive of nothing" expands to


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def targz(files: dict[str, bytes | int]) -> bytes:
    """A .tar.gz of ``files``: bytes as given, an int as that many zero bytes (streamed)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=1) as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            if isinstance(content, int):
                info.size = content
                tar.addfile(info, io.BufferedReader(_Zeros(content), MiB))
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


@pytest.fixture(scope="module")
def zeros_targz() -> bytes:
    return targz({"weights.bin": ZEROS})


@pytest.fixture
def onnx_targz(example_models: Path) -> bytes:
    return targz({"model.onnx": (example_models / "mlp_onnx" / "1" / "model.onnx").read_bytes()})


def settings(cache_dir: Path, bound: int | None) -> DownloadSettings:
    return DownloadSettings(cache_dir=cache_dir, cache_max_bytes=bound)


def entry_of_url(cache_dir: Path, url: str) -> CacheEntry:
    return CacheEntry(cache_dir, cache_key(url), url)


def entry_dir(cache_dir: Path, url: str) -> Path:
    return cache_dir / cache_key(url)


def cached(cache_dir: Path) -> set[str]:
    """The keys of the entries with a manifest."""
    return {p.stem for p in cache_dir.glob("[!.]*.json")}


def junk(n: int, seed: int) -> dict[str, bytes | int]:
    return {f"blob-{seed}.bin": bytes([seed]) * n}


def serve_blobs(server: FakeServer, count: int, size: int = 100 * KiB) -> list[str]:
    """The URLs of ``count`` distinct archives of ``size`` bytes each, served by ``server``."""
    return [server.add(f"/{i}.tar.gz", targz(junk(size, i))) for i in range(count)]


def test_least_recently_used_entries_go_first(http_server: FakeServer, cache_dir: Path) -> None:
    urls = serve_blobs(http_server, 3)
    downloads = settings(cache_dir, 250 * KiB)  # room for two
    a, b = (fetch_archive(url, downloads=downloads) for url in urls[:2])
    assert cached(cache_dir) == {cache_key(urls[0]), cache_key(urls[1])}
    assert fetch_archive(urls[0], downloads=downloads) == a  # a is used again: b is older
    fetch_archive(urls[2], downloads=downloads)
    assert cached(cache_dir) == {cache_key(urls[0]), cache_key(urls[2])}
    assert not b.exists() and a.exists()
    assert http_server.count() == 3  # a was never fetched twice
    assert list(cache_dir.glob(".tmp-*")) == []


def test_the_bound_comes_from_the_environment_too(
    http_server: FakeServer, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEPWARM_CACHE_MAX_BYTES", "150KiB")
    first = resolve_uri(
        http_server.add("/a.tar.gz", targz(junk(100 * KiB, 1))), cache_dir=cache_dir
    )
    second = resolve_uri(
        http_server.add("/b.tar.gz", targz(junk(100 * KiB, 2))), cache_dir=cache_dir
    )
    assert second.exists() and not first.exists()
    monkeypatch.setenv("KEEPWARM_CACHE_MAX_BYTES", "1.5")
    with pytest.raises(keepwarm.InvalidConfigError, match=r"KEEPWARM_CACHE_MAX_BYTES='1\.5'"):
        resolve_uri(http_server.base + "/a.tar.gz", cache_dir=cache_dir)


def test_without_a_bound_nothing_is_evicted(http_server: FakeServer, cache_dir: Path) -> None:
    for i in range(3):
        fetch_archive(http_server.add(f"/{i}.tgz", targz(junk(50 * KiB, i))),
                      downloads=settings(cache_dir, None))  # fmt: skip
    assert len(cached(cache_dir)) == 3


def test_an_entry_being_filled_or_held_is_not_evicted(
    http_server: FakeServer, cache_dir: Path
) -> None:
    urls, downloads = serve_blobs(http_server, 3), settings(cache_dir, 150 * KiB)
    fetch_archive(urls[0], downloads=downloads)
    first = entry_of_url(cache_dir, urls[0])
    with first.lock():  # as while another thread checks or refills it
        fetch_archive(urls[1], downloads=downloads)
    assert cached(cache_dir) == {cache_key(urls[0]), cache_key(urls[1])}  # over the bound
    hold = first.hold()
    try:
        fetch_archive(urls[2], downloads=downloads)
        assert cached(cache_dir) == {cache_key(urls[0]), cache_key(urls[2])}  # [1] went
    finally:
        hold.release()
        hold.release()  # idempotent
    assert enforce_bound(downloads) == [urls[0]]  # free now, and the least recently used
    assert cached(cache_dir) == {cache_key(urls[2])}


HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from keepwarm.sources.download_cache import CacheEntry
    hold = CacheEntry(Path(sys.argv[1]), sys.argv[2], "").hold()
    print("held", flush=True)
    sys.stdin.read()  # until the test closes our stdin
    """
)


def test_an_entry_held_by_another_process_is_not_evicted(
    http_server: FakeServer, cache_dir: Path
) -> None:
    downloads = settings(cache_dir, 150 * KiB)
    urls = serve_blobs(http_server, 2)
    fetch_archive(urls[0], downloads=downloads)
    newest = entry_of_url(cache_dir, urls[1])
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(cache_dir), cache_key(urls[0])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        fetch_archive(urls[1], downloads=downloads)  # over the bound: [0] is older, but held
        assert cached(cache_dir) == {cache_key(urls[0]), cache_key(urls[1])}
        assert enforce_bound(downloads, keep=newest) == []
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()
    assert enforce_bound(downloads, keep=newest) == [urls[0]]
    assert cached(cache_dir) == {cache_key(urls[1])}


def test_a_loaded_model_holds_its_entry_until_it_is_unloaded(
    http_server: FakeServer, cache_dir: Path, onnx_targz: bytes
) -> None:
    onnx_url = http_server.add("/mlp.tar.gz", onnx_targz)
    size = len(entry_files(onnx_targz))
    downloads = settings(cache_dir, size + 50 * KiB)  # the model and little else
    cache = keepwarm.ModelCache(settings=Settings(downloads=downloads))
    try:
        model = cache.load(onnx_url)
        other = http_server.add("/other.tar.gz", targz(junk(100 * KiB, 7)))
        fetch_archive(other, downloads=downloads)
        assert cache_key(onnx_url) in cached(cache_dir)  # loaded: kept though older
        assert model.predict({"image": _image()})["probs"].shape == (1, 10)
        assert cache.evict(onnx_url)
    finally:
        cache.close()
    # unloaded and closed: the least recently used entry goes now
    fetch_archive(http_server.add("/third.tar.gz", targz(junk(10 * KiB, 8))), downloads=downloads)
    assert cache_key(onnx_url) not in cached(cache_dir)


def test_an_entry_that_cannot_be_marked_in_use_still_loads(
    http_server: FakeServer, cache_dir: Path, onnx_targz: bytes
) -> None:
    # As in a read-only cache: the in-use file cannot be opened for writing.
    url = http_server.add("/mlp.tar.gz", onnx_targz)
    downloads = settings(cache_dir, None)
    fetch_archive(url, downloads=downloads)
    (cache_dir / f"{cache_key(url)}.use").mkdir()
    cache = keepwarm.ModelCache(settings=Settings(downloads=downloads))
    try:
        assert cache.load(url).predict({"image": _image()})["probs"].shape == (1, 10)
    finally:
        cache.close()
    # nor can it be evicted: a new entry over the bound keeps it, and the fetch succeeds
    other = http_server.add("/other.tar.gz", targz(junk(10 * KiB, 3)))
    assert fetch_archive(other, downloads=settings(cache_dir, 20 * KiB)).exists()
    assert cache_key(url) in cached(cache_dir)


def entry_files(archive: bytes) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.extractfile("model.onnx")
        assert member is not None
        return member.read()


def _image() -> np.ndarray:
    return np.zeros((1, 784), dtype=np.float32)


def test_an_archive_of_nothing_is_dropped_once_it_fails_to_load(
    http_server: FakeServer, cache_dir: Path, zeros_targz: bytes
) -> None:
    url = http_server.add("/nothing.tar.gz", zeros_targz)
    cache = keepwarm.ModelCache(settings=Settings(downloads=settings(cache_dir, None)))
    try:
        with pytest.raises(ModelLoadError, match=r"no runtime|recogni"):
            cache.load(url)
    finally:
        cache.close()
    assert cached(cache_dir) == set()
    assert not entry_dir(cache_dir, url).exists()
    assert list(cache_dir.glob(".tmp-*")) == []
    assert http_server.count() == 1


def test_an_archive_larger_than_the_whole_bound_is_refused(
    http_server: FakeServer, cache_dir: Path, zeros_targz: bytes
) -> None:
    url = http_server.add("/nothing.tar.gz", zeros_targz)
    expected = r"more than 10485760 bytes \(the download cache's bound, KEEPWARM_CACHE_MAX_BYTES"
    with pytest.raises(DownloadError, match=expected):
        fetch_archive(url, downloads=settings(cache_dir, 10 * MiB))
    assert cached(cache_dir) == set()
    assert [p for p in cache_dir.iterdir() if p.is_dir() or p.stat().st_size] == []


def test_an_archive_itself_larger_than_the_bound_is_refused_before_it_is_written(
    http_server: FakeServer, cache_dir: Path
) -> None:
    """Incompressible bytes: the archive is larger than the bound. It was downloaded whole
    into the cache directory, then refused as it expanded."""
    url = http_server.add("/big.tar.gz", targz({"weights.bin": os.urandom(2 * MiB)}))
    expected = (
        r"is \d+ bytes \(Content-Length\), more than 1048576 bytes \(the download cache's "
        r"bound, KEEPWARM_CACHE_MAX_BYTES\): refused as it comes"
    )
    with pytest.raises(DownloadError, match=expected):
        fetch_archive(url, downloads=settings(cache_dir, 1 * MiB))
    assert cached(cache_dir) == set()
    assert [p for p in cache_dir.iterdir() if p.is_dir() or p.stat().st_size] == []


def test_a_cache_dir_that_is_a_file_is_named_as_the_setting(
    http_server: FakeServer, tmp_path: Path, onnx_targz: bytes
) -> None:
    """KEEPWARM_CACHE_DIR=/etc/passwd said only "FileExistsError: File exists"."""
    url = http_server.add("/m.tar.gz", onnx_targz)
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    with pytest.raises(DownloadError, match=r"a-file \(downloads.cache_dir, KEEPWARM_CACHE_DIR\)"):
        fetch_archive(url, downloads=DownloadSettings(cache_dir=a_file))
    assert http_server.count() == 0


def test_bad_model_files_are_dropped_and_fetched_again(
    http_server: FakeServer, cache_dir: Path, onnx_targz: bytes
) -> None:
    url = http_server.add("/m.tar.gz", targz({"model.onnx": b"not a protobuf at all"}))
    downloads = Settings(downloads=settings(cache_dir, None))
    cache = keepwarm.ModelCache(settings=downloads)
    try:
        with pytest.raises(ModelLoadError, match="cannot load the ONNX model"):
            cache.load(url)
    finally:
        cache.close()
    assert cached(cache_dir) == set()  # dropped: the next try fetches again
    http_server.add("/m.tar.gz", onnx_targz)  # the publisher fixed it
    cache = keepwarm.ModelCache(settings=downloads)
    try:
        assert cache.load(url).predict({"image": _image()})["probs"].shape == (1, 10)
    finally:
        cache.close()
    assert http_server.count() == 2


def test_a_refused_unsafe_format_keeps_its_entry(http_server: FakeServer, cache_dir: Path) -> None:
    url = http_server.add("/m.tar.gz", targz({"model.pkl": b"\x80\x04N."}))
    cache = keepwarm.ModelCache(settings=Settings(downloads=settings(cache_dir, None)))
    try:
        with pytest.raises(UnsafeFormatError):
            cache.load(url)
    finally:
        cache.close()
    assert cached(cache_dir) == {cache_key(url)}  # the files are fine; the caller said no
