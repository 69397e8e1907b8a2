"""Loading from the download cache: hold the entry while a model uses its files.

``open_files`` resolves a URI (downloading it if need be) and, when the result lies in
the download cache, holds that entry so that no process evicts it; ``loaded`` keeps the
hold until the model object is gone (closed and released by the manager); ``failed``
releases it and, when the error says the files are bad, removes the entry so the next
attempt fetches it again rather than loading the same bad files.
"""

from __future__ import annotations

import logging
import weakref
from pathlib import Path
from typing import Any

from keepwarm.errors import DownloadError, ModelLoadError, UnsafeFormatError
from keepwarm.settings import DownloadSettings
from keepwarm.sources.download_cache import Hold, download_settings, entry_of
from keepwarm.sources.resolve import redact_url, resolve_uri

log = logging.getLogger("keepwarm.sources")
_ATTEMPTS = 3


def open_files(uri: str, downloads: DownloadSettings | None = None) -> tuple[Path, Hold | None]:
    """The local path of ``uri`` and, for a download cache entry, a hold on it."""
    settings = download_settings(downloads)
    for _attempt in range(_ATTEMPTS):
        path = resolve_uri(uri, downloads=settings)
        entry = entry_of(path, settings)
        if entry is None:
            return path, None
        try:
            hold = entry.hold()
        except OSError as exc:  # a read-only cache (baked into an image): nothing evicts it
            log.debug("cannot mark %s in use: %s", redact_url(entry.handle), exc)
            return path, None
        if hold.valid():
            return path, hold
        hold.release()  # evicted between the resolve and the hold: fetch it again
    raise DownloadError(
        f"{redact_url(uri)}: its download cache entry kept being evicted while opened"
    )


def loaded(model: Any, hold: Hold | None) -> None:
    """Keep ``hold`` until ``model`` is garbage (closed and dropped by its manager)."""
    if hold is None:
        return
    try:
        weakref.finalize(model, hold.release)
    except TypeError:  # cannot be weakly referenced: the files were read, let go now
        hold.release()


def failed(hold: Hold | None, exc: BaseException) -> None:
    """After a failed load: let go, and drop the entry when its files are what failed."""
    if hold is None:
        return
    hold.release()
    if isinstance(exc, ModelLoadError) and not isinstance(exc, UnsafeFormatError):
        entry = hold.entry
        if entry.evict_if_unused():
            log.warning(
                "removed %s from the download cache: its files failed to load (%s)",
                redact_url(entry.handle),
                exc,
            )
