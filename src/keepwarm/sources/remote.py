"""Remote stores (``s3://``, ``gs://``, any fsspec protocol) copied into the verified cache.

fsspec is imported lazily: ``pip install keepwarm[remote]`` brings it with s3fs. Endpoints
and credentials come from fsspec's usual configuration (environment, config files) plus
an optional ``storage_options`` mapping, for example
``{"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}`` for an S3-compatible store.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from keepwarm.errors import DownloadError, ModelNotFoundError
from keepwarm.runtimes.savedmodel import SavedModelRuntime, has_savedmodel_parts
from keepwarm.settings import DownloadSettings
from keepwarm.sources.cache_bound import enforce_bound
from keepwarm.sources.download_cache import (
    CacheEntry,
    cache_directory,
    download_settings,
    find_valid_for_handle,
)
from keepwarm.sources.resolve import redact_url

Progress = Callable[[int, int | None], None]

CHUNK = 1 << 20
_INSTALL_HINT = "install the extra with: pip install keepwarm[remote]"
# Listing fields that change when an object changes, across fsspec backends.
_VERSION_FIELDS = (
    "ETag", "etag", "md5Hash", "crc32c", "generation", "VersionId",
    "LastModified", "last_modified", "mtime", "updated",
)  # fmt: skip


def _filesystem(url: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    shown = redact_url(url)
    try:
        import fsspec
    except ImportError as exc:
        raise DownloadError(f"reading {shown} needs fsspec; {_INSTALL_HINT}") from exc
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    if protocol not in fsspec.available_protocols():
        known = ", ".join(sorted(fsspec.available_protocols()))
        raise DownloadError(f"cannot read {shown}: unknown protocol {protocol!r}; known: {known}")
    try:
        fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    except ImportError as exc:  # the protocol's backend, e.g. s3fs or gcsfs, is missing
        raise DownloadError(
            f"reading {shown} needs a missing package ({exc}); {_INSTALL_HINT}"
        ) from exc
    except Exception as exc:  # backends connect here (ftp, sftp) or refuse their arguments
        raise DownloadError(f"cannot open {shown}: {_cause(exc, url)}") from exc
    return fs, str(path)


def _cause(exc: BaseException, url: str) -> str:
    """``Type: message`` of a backend's error, with the URL's credentials taken out."""
    text = str(exc).replace(url, redact_url(url))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _listing(fs: Any, root: str, url: str) -> tuple[str, dict[str, dict[str, Any]]]:
    """('dir' | 'file', {relative path: info}) for ``root``, bypassing fsspec's listing cache.

    The whole listing cache is dropped: some backends (s3fs) keep stale child listings
    after ``invalidate_cache(root)``, and then open files with an outdated ETag.
    """
    shown = redact_url(url)
    try:
        fs.invalidate_cache()
        info = fs.info(root)
        if info.get("type") != "directory":
            return "file", {posixpath.basename(root.rstrip("/")): info}
        found = fs.find(root, withdirs=False, detail=True)
    except FileNotFoundError as exc:
        raise ModelNotFoundError(f"{shown} does not exist") from exc
    except Exception as exc:  # OSError, or whatever the backend raises
        raise DownloadError(f"listing {shown} failed: {_cause(exc, url)}") from exc
    prefix = root.rstrip("/") + "/"
    files: dict[str, dict[str, Any]] = {}
    for path, child in found.items():
        if child.get("type") == "directory" or not path.startswith(prefix):
            continue
        rel = path[len(prefix) :]
        parts = rel.split("/")
        if not rel or rel.startswith("/") or ".." in parts or "" in parts:
            raise DownloadError(f"refusing remote object with unsafe name {path!r} under {shown}")
        files[rel] = child
    if not files:
        raise ModelNotFoundError(f"{shown} is an empty directory")
    return "dir", files


def fingerprint(files: Mapping[str, Mapping[str, Any]]) -> str:
    """A digest of names, sizes and version fields: it changes when the remote changes."""
    rows = [
        [rel, info.get("size"), *(str(info.get(field)) for field in _VERSION_FIELDS)]
        for rel, info in sorted(files.items())
    ]
    return hashlib.sha256(json.dumps(rows).encode("utf-8")).hexdigest()


def copy_to_cache(
    url: str,
    cache_dir: Path | None = None,
    *,
    downloads: DownloadSettings | None = None,
    offline: bool | None = None,
    progress: Progress | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Path:
    """Copy the remote directory (or file) ``url`` into the cache; return its local path.

    The entry is keyed by the URL and a fingerprint of the remote listing, so a changed
    remote is fetched again into a new entry (the previous one is left for its users).
    Offline, the newest valid entry recorded for ``url`` is returned without listing.
    ``downloads`` (from the environment when None; ``cache_dir`` and ``offline`` override
    it) says where the cache is and bounds it.
    """
    settings = download_settings(downloads, cache_dir=cache_dir, offline=offline)
    directory = cache_directory(settings)
    if settings.offline:
        found = find_valid_for_handle(directory, url)
        if found is None:
            raise ModelNotFoundError(
                f"{redact_url(url)} is not in the cache at {directory} and offline mode is on "
                "(offline=True or KEEPWARM_OFFLINE=1); fetch it once while online"
            )
        return found
    fs, root = _filesystem(url, storage_options)
    kind, files = _listing(fs, root, url)
    _check_bound(files, url, settings)
    listing_digest = fingerprint(files)
    entry = CacheEntry.for_identity(directory, f"{url}\n{listing_digest}", url)
    found = entry.valid_path()
    if found is not None:
        entry.touch()
        return found
    with entry.lock():
        found = entry.valid_path()
        if found is not None:
            entry.touch()
            return found
        entry.clean_temps()
        entry.remove()
        with entry.temp_dir() as work:
            _copy_files(fs, root, kind, files, work, url, progress)
            if kind == "dir" and has_savedmodel_parts(work):
                reason = SavedModelRuntime().incomplete(work)
                if reason is not None:
                    raise DownloadError(f"{redact_url(url)} is not a complete SavedModel: {reason}")
            root_name = next(iter(files)) if kind == "file" else "."
            path = entry.install(work, root=root_name, extra={"fingerprint": listing_digest})
    enforce_bound(settings, keep=entry)
    return path


def _check_bound(
    files: Mapping[str, Mapping[str, Any]], url: str, settings: DownloadSettings
) -> None:
    """A copy larger than the download cache's bound cannot be kept: refused before fetching."""
    bound = settings.cache_max_bytes
    total = sum(size for info in files.values() if isinstance(size := info.get("size"), int))
    if bound is not None and total > bound:
        raise DownloadError(
            f"{redact_url(url)} holds {total} bytes, more than the download cache's bound "
            f"of {bound} (KEEPWARM_CACHE_MAX_BYTES)"
        )


def _copy_files(
    fs: Any,
    root: str,
    kind: str,
    files: Mapping[str, Mapping[str, Any]],
    work: Path,
    url: str,
    progress: Progress | None,
) -> None:
    sizes = [info.get("size") for info in files.values()]
    total = sum(s for s in sizes if isinstance(s, int)) if None not in sizes else None
    done = 0
    if progress is not None:
        progress(0, total)
    for rel, info in files.items():
        source = root if kind == "file" else f"{root.rstrip('/')}/{rel}"
        target = work / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        copied = 0
        try:
            with fs.open(source, "rb") as remote, target.open("wb") as local:
                while chunk := remote.read(CHUNK):
                    local.write(chunk)
                    copied += len(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
        except Exception as exc:  # OSError, or whatever the backend raises
            raise DownloadError(
                f"copying {source} from {redact_url(url)} failed: {_cause(exc, url)}"
            ) from exc
        expected = info.get("size")
        if isinstance(expected, int) and copied != expected:
            raise DownloadError(
                f"copying {source} from {redact_url(url)}: got {copied} bytes, "
                f"the listing said {expected}"
            )


def list_remote_dir(url: str, *, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Sorted names of the immediate children of the remote directory ``url``."""
    fs, root = _filesystem(url, storage_options)
    try:
        fs.invalidate_cache()
        children = fs.ls(root, detail=False)
    except FileNotFoundError as exc:
        raise ModelNotFoundError(f"{redact_url(url)} does not exist") from exc
    except Exception as exc:  # OSError, or whatever the backend raises
        raise DownloadError(f"listing {redact_url(url)} failed: {_cause(exc, url)}") from exc
    names = {posixpath.basename(str(child).rstrip("/")) for child in children}
    return sorted(name for name in names if name)
