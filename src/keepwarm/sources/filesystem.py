"""A model repository on disk: ``<root>/<model>/<version>/``, scanned as a whole each time.

Names (the rules live in ``keepwarm.sources.layout``). A model directory's name must match
``NAME`` (letters, digits, ``_ . -``; no ``..``); a version directory's name is a positive
integer written without leading zeros (``7``, not ``007`` or ``0``). Other entries are
skipped and listed, with the reason, in ``FilesystemSource.skipped`` (hidden entries, and
plain files inside a model directory, are ignored silently). A symlink, anywhere in a
model, whose target lies outside the root is refused.

When a version is taken. Copying a model takes time, and a half-written version must
never load. A version is *complete* (taken) when

- it holds the marker file ``.keepwarm-ready`` (``MARKER``): writers create it last,
  after every other file; the version is taken at once; or
- without the marker, when its files (relative paths, sizes, modification times) are the
  same as at the previous scan, so a version needs two scans to settle.

In both cases the format must also be whole, as the runtime's ``incomplete()`` judges it
(for a SavedModel: every shard named by ``variables.index`` present and long enough);
a marked version whose format is incomplete is reported with the reason, not taken. An
empty version directory is never complete.

Configuration. ``model.toml`` is read at every scan. When it is bad, ``config_error``
says why and ``config`` stays the last good one (remembered across scans). When it has
never been good since the model appeared, ``config`` holds the defaults and ``blocked``
is True: the repository must load no version of that model until the file is fixed.

The source remembers only a fingerprint per version and the last good configs.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from keepwarm.config import FILENAME, ModelConfig, load_model_config
from keepwarm.errors import InvalidConfigError, ModelNotFoundError, UnavailableError
from keepwarm.sources.layout import MARKER, NAME, check_model_name, judge, version_number
from keepwarm.sources.listing import Listing, ModelListing, VersionListing
from keepwarm.sources.version_files import OUTSIDE, walk_version

__all__ = ["MARKER", "FilesystemSource", "ModelListing", "VersionListing"]

log = logging.getLogger(__name__)

_WAITING = (
    f"new or changed files: taken when unchanged at the next scan "
    f"(or at once when {MARKER} is written last)"
)


@dataclass(frozen=True)
class _Seen:
    """What one scan learnt about a version, for the next."""

    fingerprint: int
    runtime_setting: str | None
    verdict: VersionListing | None  # the format check, when it was made


class FilesystemSource:
    """Lists the models and versions under ``root``; ``scan()`` returns the whole listing.
    A ``Source`` (``keepwarm.sources.listing``), watched through ``watchfiles`` when it is
    installed."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().absolute()
        self.location = str(self.root)
        if not self.root.is_dir():
            what = "is not a directory" if self.root.exists() else "does not exist"
            raise ModelNotFoundError(f"model repository {self.root} {what}")
        self._real = os.path.realpath(self.root)
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, int], _Seen] = {}
        self._good: dict[str, ModelConfig] = {}
        self.skipped: list[str] = []  # entries refused by the last scan, with the reason

    # ---------------------------------------------------------------- public

    def scan(self) -> Listing:
        """Every model under the root, with every version directory and its verdict.
        ``UnavailableError`` when the root itself cannot be listed (deleted, unmounted,
        unreadable): that is not an empty repository."""
        with self._lock:
            skipped: list[str] = []
            seen: dict[tuple[str, int], _Seen] = {}
            models: dict[str, ModelListing] = {}
            try:
                top = sorted(self.root.iterdir())
            except OSError as exc:
                raise UnavailableError(
                    f"model repository {self.root} cannot be listed: {exc}"
                ) from exc
            for entry in top:
                problem = self._refuse_model(entry)
                if problem:
                    if not entry.name.startswith("."):
                        skipped.append(f"{entry.name}: {problem}")
                    continue
                models[entry.name] = self._scan_model(entry, skipped, seen)
            self._seen = seen
            self._good = {k: v for k, v in self._good.items() if k in models}
            self._report(skipped)
            return models

    @property
    def watchable(self) -> bool:
        try:
            import watchfiles  # noqa: F401
        except ImportError:
            return False
        return True

    def watch(self, stop: threading.Event, on_change: Callable[[], None]) -> None:
        try:
            import watchfiles
        except ImportError:
            return  # polling alone
        for _changes in watchfiles.watch(
            self.root,
            stop_event=stop,
            debounce=200,
            rust_timeout=500,
            yield_on_timeout=False,
            raise_interrupt=False,
        ):
            on_change()

    def model_path(self, name: str) -> Path:
        """The directory of model ``name``, checked like a scan checks it."""
        path = self.root / check_model_name(name)
        if not path.is_dir() or not self._inside(path):
            raise ModelNotFoundError(f"model {name!r} not found in {self.root}")
        return path

    def config_for(self, name: str) -> ModelConfig:
        """Model ``name``'s configuration, read now; the last good one when the file is bad
        (``InvalidConfigError`` when there never was a good one)."""
        path = self.model_path(name)
        with self._lock:
            try:
                config = self._read_config(path)
            except InvalidConfigError:
                if name in self._good:
                    return self._good[name]
                raise
            self._good[name] = config
            return config

    # ---------------------------------------------------------------- models

    def _entries(self, path: Path, skipped: list[str]) -> list[Path]:
        try:
            return sorted(path.iterdir())
        except OSError as exc:  # removed or unreadable while scanning
            skipped.append(f"{path.relative_to(self.root)}: cannot be listed: {exc}")
            return []

    def _refuse_model(self, entry: Path) -> str | None:
        if not NAME.match(entry.name) or ".." in entry.name:
            return "not a valid model name (letters, digits, '_', '.', '-'; no '..')"
        if not self._inside(entry):
            return f"a symlink to {os.path.realpath(entry)}, {OUTSIDE}"
        if not entry.is_dir():
            return "not a directory"
        return None

    def _scan_model(
        self, path: Path, skipped: list[str], seen: dict[tuple[str, int], _Seen]
    ) -> ModelListing:
        name = path.name
        error = None
        try:
            config = self._good[name] = self._read_config(path)
        except InvalidConfigError as exc:
            error = exc.message
            config = self._good.get(name, ModelConfig())
        versions: dict[int, VersionListing] = {}
        for entry in self._entries(path, skipped):
            version = version_number(entry.name)
            where = f"{name}/{entry.name}"
            if version is None:
                if entry.is_dir() and not entry.name.startswith("."):
                    skipped.append(f"{where}: not a version (a positive integer, no leading zeros)")
                continue
            if not self._inside(entry):
                skipped.append(f"{where}: a symlink to {os.path.realpath(entry)}, {OUTSIDE}")
                continue
            if not entry.is_dir():
                skipped.append(f"{where}: not a directory")
                continue
            versions[version] = self._scan_version(name, version, entry, config, seen)
        return ModelListing(
            name,
            path,
            config,
            error,
            versions,
            blocked=error is not None and name not in self._good,
        )

    def _read_config(self, model_dir: Path) -> ModelConfig:
        path = model_dir / FILENAME
        if path.is_symlink() and not self._inside(path):
            raise InvalidConfigError(f"{path}: a symlink to {os.path.realpath(path)}, {OUTSIDE}")
        return load_model_config(path)

    # ---------------------------------------------------------------- versions

    def _scan_version(
        self,
        name: str,
        version: int,
        path: Path,
        config: ModelConfig,
        seen: dict[tuple[str, int], _Seen],
    ) -> VersionListing:
        def refused(reason: str, runtime: str | None = None) -> VersionListing:
            return VersionListing(version, path, False, reason, runtime)

        try:
            files = walk_version(str(path), self._inside_real)
        except OSError as exc:
            return refused(f"cannot be read: {exc}")
        if files.problem:
            return refused(files.problem)
        if files.count == int(files.marked):
            return refused("empty: no model files yet")
        marked = files.marked
        key = (name, version)
        before = self._seen.get(key)
        now = _Seen(files.fingerprint, config.runtime, None)
        same = (
            before is not None
            and before.fingerprint == now.fingerprint
            and before.runtime_setting == now.runtime_setting
        )
        if before is not None and same and before.verdict is not None:
            seen[key] = before  # unchanged since it was judged: the verdict stands
            return before.verdict
        if not marked and not same:
            seen[key] = now
            return refused(_WAITING)
        # The size the budget reserves comes from this walk: no second one.
        verdict = replace(judge(version, path, config), nbytes=files.nbytes)
        seen[key] = _Seen(now.fingerprint, now.runtime_setting, verdict)
        return verdict

    # ---------------------------------------------------------------- helpers

    def _inside(self, path: Path) -> bool:
        return self._inside_real(os.path.realpath(path))

    def _inside_real(self, real: str) -> bool:
        return real == self._real or real.startswith(self._real.rstrip(os.sep) + os.sep)

    def _report(self, skipped: list[str]) -> None:
        for line in sorted(set(skipped) - set(self.skipped)):
            log.warning("model repository %s: skipped %s", self.root, line)
        self.skipped = skipped
