"""Safe extraction of ``.tar.gz`` model archives.

Safety is Python's ``tarfile`` ``data`` filter (hence ``requires-python >= 3.11.4``): it
resolves each member's path and link target against what is already on disk, so a chain
of links (``d/x -> ..``, then ``d/x/y -> ..``) cannot lead outside the destination. Every
member is first checked against the empty destination, so most unsafe archives are refused
before anything is written; the filter runs again during extraction for what only the disk
can tell. Whether the extracted files make a whole model is the runtimes' question
(``keepwarm.runtimes.savedmodel``); nothing here imports an ML framework.
"""

from __future__ import annotations

import re
import tarfile
import zlib
from pathlib import Path

from keepwarm.errors import DownloadError


def _absolute(name: str) -> bool:
    # The data filter would strip the leading "/" and extract it; an archive that names
    # absolute paths was not made for this use, so it is refused instead.
    return not name or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) is not None


def _unsafe(member: tarfile.TarInfo, reason: str) -> DownloadError:
    return DownloadError(f"unsafe archive member {member.name!r}: {reason}")


def _check(
    members: list[tarfile.TarInfo], dest: Path, max_bytes: int, label: str, limit: str
) -> None:
    total = 0
    for member in members:
        if _absolute(member.name):
            raise _unsafe(member, "absolute path")
        try:
            tarfile.data_filter(member, str(dest))
        except tarfile.FilterError as exc:
            raise _unsafe(member, str(exc)) from exc
        total += member.size if member.isfile() else 0
        if total > max_bytes:
            raise DownloadError(
                f"archive from {label} expands to more than {max_bytes} bytes "
                f"({limit}; reached at member {member.name!r})"
            )


def safe_extract(
    archive: Path,
    dest: Path,
    *,
    max_bytes: int,
    what: str | None = None,
    limit: str = "the limit on extracted size",
) -> None:
    """Extract a gzip'd tar ``archive`` into the existing, empty directory ``dest``.

    Refuses, with :class:`DownloadError` naming the member: absolute paths, ``..``
    components, links that lead outside ``dest`` (also through other links) and special
    files; and an archive whose files add up to more than ``max_bytes`` (``limit`` says
    which setting that is). A truncated or
    corrupt archive raises :class:`DownloadError` naming ``what``. On error ``dest`` may
    hold part of the archive: extract into a scratch directory and discard it then.
    """
    label = what or str(archive)
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            members = tar.getmembers()  # reads the whole archive: truncation surfaces here
            _check(members, dest, max_bytes, label, limit)
            tar.extractall(dest, members=members, filter="data")
    except tarfile.FilterError as exc:  # found during extraction: a chain of links
        raise _unsafe(exc.tarinfo, str(exc)) from exc
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DownloadError(
            f"archive from {label} is truncated or corrupt: {type(exc).__name__}: {exc}"
        ) from exc
    if not any(dest.iterdir()):
        raise DownloadError(f"archive from {label} is empty")
