"""One walk of a version directory: its files summed up (count, size, marker,
fingerprint), or the reason to refuse it (a symlink leaving the root, a broken one)."""

from __future__ import annotations

import os
from collections.abc import Callable

from keepwarm.sources.layout import MARKER

OUTSIDE = "outside the repository"
_MASK = (1 << 64) - 1


class VersionFiles:
    """What a walk of one version found: the count, the total size, whether the marker is
    there, and a fingerprint of (relative path, size, mtime) that ignores the order."""

    __slots__ = ("count", "fingerprint", "marked", "nbytes", "problem")

    def __init__(self) -> None:
        self.count = 0
        self.nbytes = 0
        self.fingerprint = 0
        self.marked = False
        self.problem: str | None = None

    def add(self, relative: str, size: int, mtime_ns: int) -> None:
        self.count += 1
        self.nbytes += size
        self.fingerprint = (self.fingerprint + hash((relative, size, mtime_ns))) & _MASK
        if relative == MARKER:
            self.marked = True


def walk_version(top: str, inside: Callable[[str], bool]) -> VersionFiles:
    """Every file under ``top``, summed up as it is walked (one pass, no sorting: a
    long C call would hold the GIL and stall requests): or a reason to refuse the
    version (a symlink whose real path ``inside`` refuses, a broken symlink)."""
    files = VersionFiles()
    visited: set[str] = set()
    stack = [(top, "")]
    while stack:
        directory, prefix = stack.pop()
        real = os.path.realpath(directory)
        if real in visited:  # a symlink loop, or one directory reached twice
            continue
        visited.add(real)
        with os.scandir(directory) as entries:
            for entry in entries:
                relative = prefix + entry.name
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    if not inside(target):
                        files.problem = f"{relative} is a symlink to {target}, {OUTSIDE}"
                        return files
                    if not os.path.exists(target):
                        files.problem = f"{relative} is a broken symlink"
                        return files
                if entry.is_dir():
                    stack.append((entry.path, relative + "/"))
                elif entry.is_file():
                    stat = entry.stat()
                    files.add(relative, stat.st_size, stat.st_mtime_ns)
    return files
