"""What a repository source lists, and the ``Source`` protocol every source implements.

A scan returns the whole listing (every model, every version directory with its verdict),
so a scan needs no memory of the last one. A scan that cannot list the repository at all
(the root deleted or unreadable, a store answering with an error) raises a
``KeepwarmError``: a failed listing is not an empty one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from keepwarm.config import ModelConfig
from keepwarm.settings import DownloadSettings


@dataclass(frozen=True)
class VersionListing:
    version: int
    path: Path
    complete: bool  # taken: its files are whole and settled, it may load
    reason: str | None  # why not (yet) taken; None when complete
    runtime: str | None = None  # the runtime that judged the format, once known
    nbytes: int = 0  # the total size of its files, from the scan's own walk


@dataclass(frozen=True)
class ModelListing:
    name: str
    path: Path
    config: ModelConfig  # in force: the last good one, or the defaults
    config_error: str | None  # why model.toml is bad now; None when it is good (or absent)
    versions: dict[int, VersionListing] = field(default_factory=dict)
    blocked: bool = False  # model.toml has never been good: load nothing


Listing = dict[str, ModelListing]


class Source(Protocol):
    """A model repository: lists it, and says whether (and how) it can be watched."""

    @property
    def location(self) -> str:
        """Where the repository is, as the user gave it (for messages)."""
        ...

    @property
    def skipped(self) -> list[str]:
        """Entries the last scan refused, each with the reason."""
        ...

    def scan(self) -> Listing:
        """The whole listing; raises ``KeepwarmError`` when the repository cannot be listed."""
        ...

    @property
    def watchable(self) -> bool:
        """True when ``watch`` reports changes (otherwise only polling finds them)."""
        ...

    def watch(self, stop: threading.Event, on_change: Callable[[], None]) -> None:
        """Call ``on_change()`` after each burst of changes until ``stop`` is set; returns
        at once when the source cannot be watched."""
        ...


def open_source(root: str, downloads: DownloadSettings | None = None) -> Source:
    """The source of a repository ``root``: a local directory (``~``, ``file://`` URLs
    parsed as ``keepwarm.load`` parses them) or a remote store (any fsspec URL), whose
    versions are copied into the download cache ``downloads`` describes."""
    from keepwarm.sources.resolve import local_path_or_none

    path = local_path_or_none(root)
    if path is None:
        from keepwarm.sources.remote_repository import RemoteSource

        return RemoteSource(root, downloads=downloads)
    from keepwarm.sources.filesystem import FilesystemSource

    return FilesystemSource(path)
