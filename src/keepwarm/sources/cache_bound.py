"""The download cache's size bound: evict the least recently used entries nothing uses."""

from __future__ import annotations

import logging

from keepwarm.settings import DownloadSettings
from keepwarm.sources.download_cache import CacheEntry
from keepwarm.sources.resolve import redact_url

log = logging.getLogger("keepwarm.sources")


def enforce_bound(downloads: DownloadSettings, keep: CacheEntry | None = None) -> list[str]:
    """Evict least recently used entries that nothing uses until the cache holds at most
    ``downloads.cache_max_bytes`` (``keep`` is never evicted); returns the evicted handles."""
    bound = downloads.cache_max_bytes
    if bound is None:
        return []
    cache_dir = downloads.directory()
    entries: list[tuple[int, int, CacheEntry]] = []
    for manifest_path in cache_dir.glob("[!.]*.json"):
        entry = CacheEntry(cache_dir, manifest_path.stem, "")
        manifest = entry.read_manifest() or {}
        files = manifest.get("files")
        if not isinstance(files, dict):
            continue
        try:
            used = manifest_path.stat().st_mtime_ns
        except OSError:
            continue
        nbytes = sum(size for size in files.values() if isinstance(size, int))
        entries.append(
            (used, nbytes, CacheEntry(cache_dir, entry.key, str(manifest.get("handle"))))
        )
    total = sum(nbytes for _used, nbytes, _entry in entries)
    evicted: list[str] = []
    for _used, nbytes, entry in sorted(entries, key=lambda item: item[0]):
        if total <= bound:
            break
        if keep is not None and entry.key == keep.key:
            continue
        if entry.evict_if_unused():
            total -= nbytes
            evicted.append(entry.handle)
            log.info(
                "download cache: evicted %s (%d bytes) to stay within %d",
                redact_url(entry.handle),
                nbytes,
                bound,
            )
    if total > bound:
        log.warning(
            "download cache %s holds %d bytes, over its bound of %d: the rest is in use",
            cache_dir,
            total,
            bound,
        )
    return evicted
