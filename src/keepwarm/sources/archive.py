"""Safe extraction of ``.tar.gz`` archives and a framework-free SavedModel completeness check.

Nothing here imports an ML framework: a SavedModel is judged by the files it must contain.
"""

from __future__ import annotations

import os
import posixpath
import re
import tarfile
import zlib
from pathlib import Path

from keepwarm.errors import DownloadError

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
_SHARD = re.compile(r"^variables\.data-(\d{5})-of-(\d{5})$")


def _unsafe_name(name: str) -> str | None:
    """Why an archive member name would land outside the destination, or None if it is safe."""
    if not name or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "'..' in path"
    return None


def _check_member(member: tarfile.TarInfo) -> None:
    reason = _unsafe_name(member.name)
    if reason is None and member.issym():
        target = member.linkname
        if target.startswith("/") or _escapes(
            posixpath.join(posixpath.dirname(member.name), target)
        ):
            reason = f"symlink to {target!r} points outside the archive"
    elif reason is None and member.islnk():
        if member.linkname.startswith("/") or _escapes(member.linkname):
            reason = f"hard link to {member.linkname!r} points outside the archive"
    elif reason is None and not (member.isfile() or member.isdir()):
        reason = "device, fifo or other special file"
    if reason is not None:
        raise DownloadError(f"unsafe archive member {member.name!r}: {reason}")


def _escapes(relative: str) -> bool:
    normal = posixpath.normpath(relative)
    return normal == ".." or normal.startswith("../") or normal.startswith("/")


def safe_extract(archive: Path, dest: Path, *, what: str | None = None) -> None:
    """Extract a gzip'd tar ``archive`` into the existing directory ``dest``.

    Refuses absolute paths, ``..`` components, links that leave ``dest`` and special
    files; a truncated or corrupt archive raises :class:`DownloadError` naming ``what``.
    """
    label = what or str(archive)
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            members = tar.getmembers()  # reads the whole archive: truncation surfaces here
            for member in members:
                _check_member(member)
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: belt and braces
                tar.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - older 3.11 patch releases
                tar.extractall(dest, members=members)
    except DownloadError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DownloadError(
            f"archive from {label} is truncated or corrupt: {type(exc).__name__}: {exc}"
        ) from exc
    if not any(dest.iterdir()):
        raise DownloadError(f"archive from {label} is empty")


def looks_like_savedmodel(path: Path) -> bool:
    """True when ``path`` has the files of a SavedModel (even if some are missing)."""
    return (
        any((path / name).exists() for name in SAVED_MODEL_FILES)
        or (path / "variables" / "variables.index").exists()
    )


def savedmodel_incomplete(path: str | os.PathLike[str]) -> str | None:
    """Why the SavedModel directory ``path`` is incomplete, or None when nothing is missing.

    Checks, without TensorFlow: ``saved_model.pb`` (or ``.pbtxt``) exists and is not empty;
    when there are variables, ``variables.index`` exists and every shard
    ``variables.data-XXXXX-of-NNNNN`` for XXXXX in 0..NNNNN-1 is present.
    """
    root = Path(path)
    if not root.is_dir():
        return f"{root} is not a directory"
    graphs = [root / name for name in SAVED_MODEL_FILES if (root / name).is_file()]
    if not graphs:
        return f"{root} has no saved_model.pb"
    if graphs[0].stat().st_size == 0:
        return f"{graphs[0]} is empty"
    variables = root / "variables"
    if not variables.is_dir():
        return None  # a SavedModel without variables is legal
    index = variables / "variables.index"
    shards: dict[int, set[int]] = {}
    for child in variables.iterdir():
        match = _SHARD.match(child.name)
        if match:
            shards.setdefault(int(match.group(2)), set()).add(int(match.group(1)))
    if not index.is_file():
        if shards:
            return f"{index} is missing but variable shards exist"
        return None
    if index.stat().st_size == 0:
        return f"{index} is empty"
    if not shards:
        return f"{variables} has variables.index but no variables.data-*-of-* shard"
    if len(shards) > 1:
        return f"{variables} mixes shard counts {sorted(shards)}"
    count, present = next(iter(shards.items()))
    missing = sorted(set(range(count)) - present)
    if missing:
        names = ", ".join(f"variables.data-{i:05d}-of-{count:05d}" for i in missing[:5])
        return f"{variables} is missing {len(missing)} of {count} shards: {names}"
    return None
