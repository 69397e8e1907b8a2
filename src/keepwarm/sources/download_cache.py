"""The verified on-disk download cache shared by HTTP archives and remote (fsspec) copies.

Layout, for ``key = sha256(identity)``::

    <cache_dir>/<key>/          the files: a model directory, or a directory holding one file
    <cache_dir>/<key>.json      the manifest, written last: handle, root, file sizes, extras
    <cache_dir>/<key>.lock      the cross-process lock (filelock) held while checking or filling
    <cache_dir>/<key>.use       shared-locked (flock) by every process using the entry
    <cache_dir>/.tmp-<key>-*    work in progress; removed on failure and by the next lock holder

An entry is valid only if its manifest exists, names the same handle, and every recorded
file exists with its recorded size. Anything else is a partial or corrupt entry: it is
removed and fetched again.

With a bound (``downloads.cache_max_bytes``, ``KEEPWARM_CACHE_MAX_BYTES``), installing an
entry evicts the least recently used entries that nothing uses until the cache fits. An
entry is in use while a process fills or checks it (its ``.lock``) or holds a ``Hold`` on
it (a shared lock on its ``.use``): from just before a model is loaded from its files until
that model is closed (``keepwarm.sources.held``). Use is recorded on the manifest's mtime.
The bound is kept by ``keepwarm.sources.cache_bound``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from filelock import FileLock, Timeout

from keepwarm.errors import DownloadError
from keepwarm.settings import DownloadSettings, Settings

MANIFEST_VERSION = 1


def download_settings(
    downloads: DownloadSettings | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
) -> DownloadSettings:
    """``downloads`` (from the environment when None) with ``cache_dir``/``offline`` applied."""
    base = downloads if downloads is not None else Settings.from_env().downloads
    return (
        Settings(downloads=base)
        .override(downloads={"cache_dir": cache_dir, "offline": offline})
        .downloads
    )


def cache_directory(downloads: DownloadSettings) -> Path:
    """The cache directory, made when missing; a ``DownloadError`` naming the setting when
    it cannot be (KEEPWARM_CACHE_DIR=/etc/passwd said only "FileExistsError: File exists")."""
    path = downloads.directory()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(
            f"the download cache directory {path} (downloads.cache_dir, KEEPWARM_CACHE_DIR) "
            f"cannot be used: {type(exc).__name__}: {exc.strerror or exc}"
        ) from exc
    return path


def cache_key(identity: str) -> str:
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    """One download cache entry; ``handle`` is what the user asked for (in the manifest)."""

    cache_dir: Path
    key: str
    handle: str

    @classmethod
    def for_identity(cls, cache_dir: Path, identity: str, handle: str) -> CacheEntry:
        return cls(cache_dir, cache_key(identity), handle)

    @property
    def dir(self) -> Path:
        return self.cache_dir / self.key

    @property
    def manifest(self) -> Path:
        return self.cache_dir / f"{self.key}.json"

    def lock(self, *, blocking: bool = True) -> FileLock:
        return FileLock(str(self.cache_dir / f"{self.key}.lock"), blocking=blocking)

    def read_manifest(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.manifest.read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def valid_path(self) -> Path | None:
        """The entry's path if its manifest matches the files on disk (a cheap check)."""
        return _valid_path(self.dir, self.read_manifest(), self.handle)

    def touch(self) -> None:
        """Record a use: the manifest's mtime orders eviction (set from the fine clock,
        as a file system's own timestamps may not tell two quick uses apart)."""
        now = time.time_ns()
        with contextlib.suppress(OSError):
            os.utime(self.manifest, ns=(now, now))

    def remove(self) -> None:
        """Remove the manifest first (so the entry stops being valid), then its files."""
        with contextlib.suppress(FileNotFoundError):
            self.manifest.unlink()
        if self.dir.exists() or self.dir.is_symlink():
            if self.dir.is_dir() and not self.dir.is_symlink():
                shutil.rmtree(self.dir, ignore_errors=True)
            else:
                self.dir.unlink()

    def clean_temps(self) -> None:
        """Remove work left by a process that died while holding this entry's lock."""
        for leftover in self.cache_dir.glob(f".tmp-{self.key}-*"):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()

    @contextlib.contextmanager
    def temp_dir(self) -> Iterator[Path]:
        """A fresh work directory inside the cache dir (same filesystem: rename is atomic)."""
        path = Path(tempfile.mkdtemp(prefix=f".tmp-{self.key}-", dir=self.cache_dir))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def temp_file(self, suffix: str = "") -> Path:
        fd, name = tempfile.mkstemp(prefix=f".tmp-{self.key}-", suffix=suffix, dir=self.cache_dir)
        os.close(fd)
        return Path(name)

    def install(self, work: Path, *, root: str = ".", extra: dict[str, Any] | None = None) -> Path:
        """Move ``work`` into place atomically, then write the manifest. Hold the lock."""
        files = list_files(work)
        self.remove()
        os.replace(work, self.dir)
        manifest = {
            "version": MANIFEST_VERSION,
            "handle": self.handle,
            "root": root,
            "files": files,
            "created": time.time(),
            **(extra or {}),
        }
        tmp = self.temp_file(".json")
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True), "utf-8")
        os.replace(tmp, self.manifest)
        self.touch()
        return _entry_root(self.dir, root)

    # ----------------------------------------------------------------- in use

    def hold(self) -> Hold:
        """Mark the entry in use (a shared lock on ``.use``) until ``Hold.release()``.
        Blocks only while another process is evicting it."""
        stream = (self.cache_dir / f"{self.key}.use").open("a")
        try:
            fcntl.flock(stream.fileno(), fcntl.LOCK_SH)
        except BaseException:
            stream.close()
            raise
        self.touch()
        return Hold(self, stream)

    def evict_if_unused(self) -> bool:
        """Remove the entry unless a process fills, checks or uses it; True if removed."""
        try:
            with self.lock(blocking=False), (self.cache_dir / f"{self.key}.use").open("a") as use:
                try:
                    fcntl.flock(use.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
                self.remove()
                self.clean_temps()
                return True
        except (Timeout, OSError):  # busy; or a cache this process may not change
            return False


class Hold:
    """A use of a cache entry; ``release()`` (idempotent) ends it."""

    def __init__(self, entry: CacheEntry, stream: IO[str]) -> None:
        self.entry = entry
        self._stream: IO[str] | None = stream

    def valid(self) -> bool:
        manifest = self.entry.read_manifest()
        handle = manifest.get("handle") if manifest is not None else None
        return isinstance(handle, str) and _valid_path(self.entry.dir, manifest, handle) is not None

    def release(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()  # closing the file drops the lock


def list_files(root: Path) -> dict[str, int]:
    """Relative POSIX path -> size, for every regular file under ``root``."""
    files: dict[str, int] = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath, name)
            if path.is_file() and not path.is_symlink():
                files[path.relative_to(root).as_posix()] = path.stat().st_size
    return files


def _entry_root(entry_dir: Path, root: str) -> Path:
    return entry_dir if root in ("", ".") else entry_dir / root


def _valid_path(entry_dir: Path, manifest: dict[str, Any] | None, handle: str) -> Path | None:
    if (
        manifest is None
        or manifest.get("version") != MANIFEST_VERSION
        or manifest.get("handle") != handle
        or not entry_dir.is_dir()
    ):
        return None
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return None
    for rel, size in files.items():
        try:
            if (entry_dir / rel).stat().st_size != size:
                return None
        except OSError:
            return None
    path = _entry_root(entry_dir, str(manifest.get("root", ".")))
    return path if path.exists() else None


def find_valid_for_handle(cache_dir: Path, handle: str) -> Path | None:
    """The newest valid entry fetched for ``handle``, whatever its key (offline fallback)."""
    best: tuple[float, Path] | None = None
    for manifest_path in cache_dir.glob("*.json"):
        if manifest_path.name.startswith("."):
            continue
        entry = CacheEntry(cache_dir, manifest_path.stem, handle)
        manifest = entry.read_manifest()
        path = _valid_path(entry.dir, manifest, handle)
        if path is not None and manifest is not None:
            created = manifest.get("created")
            when = created if isinstance(created, float) else manifest_path.stat().st_mtime
            if best is None or when > best[0]:
                best = (when, path)
    return best[1] if best else None


def entry_of(path: Path, downloads: DownloadSettings) -> CacheEntry | None:
    """The cache entry ``path`` lies in, or None when it is not in the download cache."""
    cache_dir = downloads.directory()
    try:
        rel = path.relative_to(cache_dir)
    except ValueError:
        return None
    if not rel.parts or rel.parts[0].startswith("."):
        return None
    manifest = CacheEntry(cache_dir, rel.parts[0], "").read_manifest() or {}
    handle = manifest.get("handle")
    return CacheEntry(cache_dir, rel.parts[0], handle if isinstance(handle, str) else "")
