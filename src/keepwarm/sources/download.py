"""HTTP(S) model archives (``.tar.gz`` and TF Hub handles) into the verified cache."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from keepwarm.errors import DownloadError, InvalidInputError, ModelNotFoundError
from keepwarm.runtimes.savedmodel import SavedModelRuntime, find_root, has_savedmodel_parts
from keepwarm.settings import DownloadSettings
from keepwarm.sources.archive import safe_extract
from keepwarm.sources.cache_bound import enforce_bound
from keepwarm.sources.download_cache import (
    CacheEntry,
    cache_directory,
    download_settings,
)
from keepwarm.sources.resolve import redact_url

Progress = Callable[[int, int | None], None]

CHUNK = 1 << 20
USER_AGENT = "keepwarm/0.1"
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def split_handle(handle: str) -> tuple[str, str | None]:
    """``url#sha256=<hex>`` -> (url without fragment, lower-case hex or None)."""
    parts = urlsplit(handle)
    url = urlunsplit(parts._replace(fragment=""))
    if not parts.fragment:
        return url, None
    name, _, value = parts.fragment.partition("=")
    if name != "sha256" or not _HEX64.match(value):
        raise InvalidInputError(
            f"unsupported URL fragment {parts.fragment!r} in {handle!r}: "
            "only '#sha256=<64 hex digits>' is understood"
        )
    return url, value.lower()


def fetch_url(url: str) -> str:
    """The URL to GET: TF Hub style handles get ``tf-hub-format=compressed`` added."""
    parts = urlsplit(url)
    if parts.path.lower().endswith(_ARCHIVE_SUFFIXES):
        return url
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(name == "tf-hub-format" for name, _ in query):
        return url
    query.append(("tf-hub-format", "compressed"))
    return urlunsplit(parts._replace(query=urlencode(query)))


def fetch_archive(
    handle: str,
    *,
    downloads: DownloadSettings | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    progress: Progress | None = None,
) -> Path:
    """Return the local directory for an HTTP(S) archive handle, downloading it at most once.

    ``downloads`` (from the environment when None; ``cache_dir`` and ``offline`` override
    it) bounds the download: an archive that would expand to more than
    ``max_extract_bytes`` is refused, and a new entry evicts unused ones beyond
    ``cache_max_bytes``. The cache entry is keyed by sha256 of the handle without its
    fragment and guarded by a cross-process lock; see
    :mod:`keepwarm.sources.download_cache` for what makes an entry valid.
    """
    url, expected_sha = split_handle(handle)
    settings = download_settings(downloads, cache_dir=cache_dir, offline=offline)
    directory = cache_directory(settings)
    entry = CacheEntry.for_identity(directory, url, url)
    found = entry.valid_path()
    if found is not None and _sha_matches(entry, expected_sha):
        entry.touch()
        return found
    with entry.lock():
        found = entry.valid_path()
        if found is not None and _sha_matches(entry, expected_sha):
            entry.touch()
            return found
        if settings.offline:
            raise ModelNotFoundError(
                f"{redact_url(url)} is not in the cache at {directory} and offline mode is on "
                "(offline=True or KEEPWARM_OFFLINE=1); fetch it once while online"
            )
        entry.clean_temps()
        if found is None:
            entry.remove()  # partial or corrupt: never left looking like an entry
        path = _download_into(entry, url, expected_sha, progress, settings)
    enforce_bound(settings, keep=entry)
    return path


def _sha_matches(entry: CacheEntry, expected: str | None) -> bool:
    if expected is None:
        return True
    manifest = entry.read_manifest() or {}
    return manifest.get("archive_sha256") == expected


def _download_into(
    entry: CacheEntry,
    url: str,
    expected_sha: str | None,
    progress: Progress | None,
    settings: DownloadSettings,
) -> Path:
    target = fetch_url(url)
    archive = entry.temp_file(".tar.gz")
    try:
        with archive.open("wb") as out:
            size, digest = _get(
                target, out, progress, settings.http_timeout, _extract_limit(settings)
            )
        if expected_sha is not None and digest != expected_sha:
            raise DownloadError(
                f"sha256 mismatch for {redact_url(url)}: expected {expected_sha}, got {digest}"
            )
        with entry.temp_dir() as work:
            safe_extract(archive, work, what=redact_url(target), **_extract_limit(settings))
            root = _model_root(work)
            if has_savedmodel_parts(work / root):
                reason = SavedModelRuntime().incomplete(work / root)
                if reason is not None:
                    raise DownloadError(
                        f"archive from {redact_url(target)} is not a complete SavedModel: {reason}"
                    )
            return entry.install(
                work,
                root=root,
                extra={"url": target, "archive_sha256": digest, "archive_size": size},
            )
    finally:
        archive.unlink(missing_ok=True)


def _too_large(shown: str, size: str, bound: dict[str, Any]) -> DownloadError:
    return DownloadError(
        f"archive from {shown} {size} more than {bound['max_bytes']} bytes ({bound['limit']}): "
        "refused as it comes, never written whole"
    )


def _extract_limit(settings: DownloadSettings) -> dict[str, Any]:
    """The most an archive may expand to: the extraction cap, or the download cache's
    bound when that is smaller (an entry larger than the whole cache cannot be kept)."""
    bound = settings.cache_max_bytes
    if bound is not None and bound < settings.max_extract_bytes:
        return {"max_bytes": bound, "limit": "the download cache's bound, KEEPWARM_CACHE_MAX_BYTES"}
    return {
        "max_bytes": settings.max_extract_bytes,
        "limit": "the limit on extracted size, downloads.max_extract_bytes",
    }


def _model_root(work: Path) -> str:
    """``.``, or the single top-level directory when the archive wraps the model in one."""
    if has_savedmodel_parts(work):
        found = find_root(work)
        return "." if found is None or found == work else found.name
    children = list(work.iterdir())
    if len(children) == 1 and children[0].is_dir():
        return children[0].name
    return "."


def _get(
    url: str, out: IO[bytes], progress: Progress | None, timeout: float, bound: dict[str, Any]
) -> tuple[int, str]:
    """Stream ``url`` into ``out``; return (bytes, sha256 hex). Checks Content-Length. An
    archive of more than ``bound["max_bytes"]`` (``_extract_limit``) is refused from its
    Content-Length before a byte is written, else once that much has come. (It was written
    whole, then refused as it expanded: a 743 KB archive under a 500 KB cache bound came
    in full, so an archive larger than the disk filled it.)"""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    shown = redact_url(url)
    digest = hashlib.sha256()
    done = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            header = response.headers.get("Content-Length")
            total = int(header) if header and header.isdigit() else None
            if total is not None and total > bound["max_bytes"]:
                raise _too_large(shown, f"is {total} bytes (Content-Length),", bound)
            if progress is not None:
                progress(0, total)
            while chunk := response.read(CHUNK):
                if done + len(chunk) > bound["max_bytes"]:
                    raise _too_large(shown, "is", bound)
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the response's socket, and is kept as the cause below
        message = f"GET {shown} failed: HTTP {exc.code} {exc.reason}"
        if exc.code == 404:
            raise ModelNotFoundError(message) from exc
        raise DownloadError(message) from exc
    except http.client.IncompleteRead as exc:
        raise DownloadError(
            f"GET {shown}: body truncated after {done + len(exc.partial)} bytes"
        ) from exc
    except TimeoutError as exc:
        raise DownloadError(f"GET {shown} timed out after {timeout:g} s without data") from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"GET {shown} failed: {reason}") from exc
    if total is not None and done != total:
        raise DownloadError(
            f"GET {shown}: body truncated: received {done} of {total} bytes (Content-Length)"
        )
    return done, digest.hexdigest()
