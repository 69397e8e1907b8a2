"""Turn a model URI or TF Hub handle into a local file or directory.

| URI | result |
|---|---|
| ``/path``, ``~/path``, ``relative/path``, ``file:///path`` | that local path (must exist) |
| ``http(s)://.../model.tar.gz`` or a TF Hub style handle | the verified cache entry |
| ``s3://``, ``gs://``, other fsspec protocols | a verified copy in the cache |

No ML framework is imported here, nor fsspec unless a remote URI is asked for.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit
from urllib.request import url2pathname

from keepwarm.errors import InvalidInputError, ModelNotFoundError
from keepwarm.settings import DownloadSettings

Progress = Callable[[int, int | None], None]


def resolve_uri(
    uri: str,
    *,
    downloads: DownloadSettings | None = None,
    cache_dir: Path | None = None,
    offline: bool | None = None,
    progress: Progress | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Path:
    """Return a local path for ``uri``, downloading or copying it into the cache if remote.

    ``downloads`` (``Settings.downloads``; from the environment when None) says where the
    cache is, whether to stay offline and its bounds; ``cache_dir`` and ``offline`` override
    it. ``progress(bytes_done, total_or_None)`` is called while bytes arrive;
    ``storage_options`` go to fsspec for remote stores.
    """
    if not uri or not uri.strip():
        raise InvalidInputError("model URI is empty")
    path = local_path_or_none(uri)
    if path is not None:
        return _existing(uri, path)
    scheme = urlsplit(uri).scheme.lower()
    if scheme in ("http", "https"):
        from keepwarm.sources.download import fetch_archive

        return fetch_archive(
            uri, downloads=downloads, cache_dir=cache_dir, offline=offline, progress=progress
        )
    from keepwarm.sources.remote import copy_to_cache

    return copy_to_cache(
        uri,
        cache_dir,
        downloads=downloads,
        offline=offline,
        progress=progress,
        storage_options=storage_options,
    )


def redact_url(uri: str) -> str:
    """``uri`` without the user name and password a URL may carry (for messages and logs)."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host))


def _is_windows_drive(uri: str, scheme: str) -> bool:
    return len(scheme) == 1 and os.name == "nt" and uri[1:3] in (":\\", ":/")


def local_path_or_none(uri: str | os.PathLike[str]) -> Path | None:
    """The absolute local path ``uri`` names, or None when it names a remote object.

    The one URI parser: a plain path (``~`` expanded, made absolute), a ``file://`` URL
    (percent-decoded; host empty or ``localhost``) or, on Windows, ``C:\\...`` is local;
    any other scheme (``s3://``, ``http://``, ...) is remote. The path need not exist.
    A ``file://`` URL naming another host, or no path, raises InvalidInputError.
    """
    text = os.fspath(uri)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc.lower() not in ("", "localhost"):
            raise InvalidInputError(
                f"file URL {text!r} names host {parts.netloc!r}; only local files"
            )
        raw = url2pathname(unquote(parts.path))
        if not raw:
            raise InvalidInputError(
                f"model URI is empty: the file URL {text!r} names no path "
                "(write file:///absolute/path)"
            )
    elif scheme == "" or _is_windows_drive(text, scheme):
        raw = text
    else:
        return None
    return Path(raw).expanduser().absolute()


def local_path(uri: str) -> Path:
    """A plain path or ``file://`` URL as an absolute path that exists."""
    path = local_path_or_none(uri)
    if path is None:
        raise InvalidInputError(f"{uri!r} is a remote URL, not a local path")
    return _existing(uri, path)


def _existing(uri: str, path: Path) -> Path:
    if path.exists():
        return path
    raise ModelNotFoundError(_missing_message(uri, path))


def _missing_message(uri: str, path: Path) -> str:
    tried = f"{path}" if str(path) == uri else f"{path} (from {uri!r})"
    parent = path.parent
    if not parent.is_dir():
        return f"model path {tried} does not exist, nor does its directory {parent}"
    try:
        names = sorted(child.name for child in parent.iterdir())
    except OSError:
        names = []
    near = difflib.get_close_matches(path.name, names, n=5, cutoff=0.6)
    hint = (
        f"; near names in {parent}: {', '.join(near)}" if near else f"; nothing similar in {parent}"
    )
    return f"model path {tried} does not exist{hint}"
