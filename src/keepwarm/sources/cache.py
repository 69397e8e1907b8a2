"""The verified on-disk download cache shared by HTTP archives and remote (fsspec) copies.

Layout, for ``key = sha256(identity)``::

    <cache_dir>/<key>/          the files: a model directory, or a directory holding one file
    <cache_dir>/<key>.json      the manifest, written last: handle, root, file sizes, extras
    <cache_dir>/<key>.lock      the cross-process lock (filelock) held while checking or filling
    <cache_dir>/.tmp-<key>-*    work in progress; removed on failure and by the next lock holder

An entry is valid only if its manifest exists, names the same handle, and every recorded
file exists with its recorded size. Anything else is a partial or corrupt entry: it is
removed and fetched again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

MANIFEST_VERSION = 1
_TRUE = {"1", "true", "yes", "on"}


def default_cache_dir() -> Path:
    """``$KEEPWARM_CACHE_DIR``, else the platform's user cache directory for keepwarm."""
    env = os.environ.get("KEEPWARM_CACHE_DIR")
    if env:
        return Path(env).expanduser().absolute()
    import platformdirs

    return Path(platformdirs.user_cache_dir("keepwarm"))


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    path = Path(cache_dir).expanduser().absolute() if cache_dir is not None else default_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_offline(offline: bool | None) -> bool:
    """``offline`` if given, else ``$KEEPWARM_OFFLINE`` (1/true/yes/on)."""
    if offline is not None:
        return offline
    return os.environ.get("KEEPWARM_OFFLINE", "").strip().lower() in _TRUE


def cache_key(identity: str) -> str:
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Entry:
    """One cache entry; ``handle`` is what the user asked for (recorded in the manifest)."""

    cache_dir: Path
    key: str
    handle: str

    @classmethod
    def for_identity(cls, cache_dir: Path, identity: str, handle: str) -> Entry:
        return cls(cache_dir, cache_key(identity), handle)

    @property
    def dir(self) -> Path:
        return self.cache_dir / self.key

    @property
    def manifest(self) -> Path:
        return self.cache_dir / f"{self.key}.json"

    def lock(self) -> FileLock:
        return FileLock(str(self.cache_dir / f"{self.key}.lock"))

    def read_manifest(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.manifest.read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def valid_path(self) -> Path | None:
        """The entry's path if its manifest matches the files on disk (a cheap check)."""
        return _valid_path(self.dir, self.read_manifest(), self.handle)

    def remove(self) -> None:
        """Remove the manifest first (so the entry stops being valid), then its files."""
        with contextlib.suppress(FileNotFoundError):
            self.manifest.unlink()
        if self.dir.exists() or self.dir.is_symlink():
            if self.dir.is_dir() and not self.dir.is_symlink():
                shutil.rmtree(self.dir)
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
            **(extra or {}),
        }
        tmp = self.temp_file(".json")
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True), "utf-8")
        os.replace(tmp, self.manifest)
        return _entry_root(self.dir, root)


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
    """The newest valid entry recorded for ``handle``, whatever its key (offline fallback)."""
    best: tuple[float, Path] | None = None
    for manifest_path in cache_dir.glob("*.json"):
        if manifest_path.name.startswith("."):
            continue
        entry = Entry(cache_dir, manifest_path.stem, handle)
        path = entry.valid_path()
        if path is not None:
            mtime = manifest_path.stat().st_mtime
            if best is None or mtime > best[0]:
                best = (mtime, path)
    return best[1] if best else None
