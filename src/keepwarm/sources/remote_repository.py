"""A model repository in a remote store (``s3://bucket/prefix``, any fsspec protocol).

The same layout and rules as the local one (``<root>/<model>/<version>/``, ``model.toml``,
the ``.keepwarm-ready`` marker, or a listing unchanged across two scans). A version that is
taken is copied into the verified local cache (``sources.remote.copy_to_cache``) and its
format checked there; the manager then loads the local copy.

A store that cannot be listed fails the scan with a ``ModelNotFoundError`` (it does not
exist) or a ``DownloadError`` naming the URL (fsspec's ``find`` walks with listing errors
omitted, so an empty result is listed again with ``ls``, which raises them: an HTTP store
that could not be reached listed as an empty repository, and the server stood ready with
no models); a ``model.toml`` that cannot be read is that
model's ``config_error``, and its last good configuration stays in force.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from keepwarm.config import FILENAME, ModelConfig, parse_model_config
from keepwarm.errors import (
    DownloadError,
    InvalidConfigError,
    InvalidInputError,
    KeepwarmError,
    ModelNotFoundError,
)
from keepwarm.settings import DownloadSettings
from keepwarm.sources.layout import MARKER, check_model_name, judge, version_number
from keepwarm.sources.listing import Listing, ModelListing, VersionListing
from keepwarm.sources.remote import _cause, _filesystem, copy_to_cache, fingerprint
from keepwarm.sources.resolve import redact_url

log = logging.getLogger("keepwarm.sources")
_WAITING = "waiting: its listing must stay unchanged across two scans (or hold the marker)"


class RemoteSource:
    """A ``Source`` (``keepwarm.sources.listing``) over fsspec; polled, never watched."""

    watchable = False

    def __init__(
        self,
        url: str,
        *,
        storage_options: Mapping[str, Any] | None = None,
        cache_dir: Path | None = None,
        downloads: DownloadSettings | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.location = self.url
        self.storage_options = dict(storage_options or {})
        self.cache_dir = cache_dir
        self.downloads = downloads
        self.skipped: list[str] = []
        self._good: dict[str, ModelConfig] = {}
        self._seen: dict[tuple[str, int], str] = {}  # the listing digest of the last scan
        self._copied: dict[tuple[str, int], tuple[str, VersionListing]] = {}

    def watch(self, stop: threading.Event, on_change: Callable[[], None]) -> None:
        return  # a remote store sends no change notifications: polling alone

    def scan(self) -> Listing:
        fs, root = _filesystem(self.url, self.storage_options)
        found = self._find(fs, root)
        prefix = root.rstrip("/") + "/"
        tree: dict[str, dict[str, Any]] = {}
        skipped: list[str] = []
        for path, info in found.items():
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            if len(parts) < 2:
                continue
            name = parts[0]
            try:
                check_model_name(name)
            except InvalidInputError as exc:
                skipped.append(f"{name}: {exc.message}")
                continue
            model = tree.setdefault(name, {"config": None, "versions": {}})
            if len(parts) == 2 and parts[1] == FILENAME:
                model["config"] = path
            elif (version := version_number(parts[1])) is not None and len(parts) > 2:
                model["versions"].setdefault(version, {})["/".join(parts[2:])] = info
        self.skipped = sorted(set(skipped))
        listing = {name: self._model(fs, name, model) for name, model in sorted(tree.items())}
        present = {(name, v) for name, model in listing.items() for v in model.versions}
        self._seen = {k: v for k, v in self._seen.items() if k in present}
        self._copied = {k: v for k, v in self._copied.items() if k in present}
        return listing

    def _find(self, fs: Any, root: str) -> dict[str, Any]:
        try:
            fs.invalidate_cache()
            found: dict[str, Any] = fs.find(root, withdirs=False, detail=True)
            if not found:  # ``find`` walks with errors omitted: an unreachable store is empty
                with contextlib.suppress(FileNotFoundError):  # nothing there: empty
                    fs.ls(root, detail=False)  # raises what the walk swallowed
        except FileNotFoundError as exc:
            raise ModelNotFoundError(f"model repository {self.url} does not exist: {exc}") from exc
        except KeepwarmError:
            raise
        except Exception as exc:  # OSError; botocore's NoCredentialsError is none (it passed raw)
            raise DownloadError(
                f"listing the model repository {redact_url(self.url)} failed: "
                f"{_cause(exc, self.url)}"
            ) from exc
        return found

    def _model(self, fs: Any, name: str, model: dict[str, Any]) -> ModelListing:
        error = None
        try:
            config = ModelConfig()
            if model["config"] is not None:
                text = fs.cat_file(model["config"]).decode("utf-8")
                config = parse_model_config(text, source=f"{self.url}/{name}/{FILENAME}")
            self._good[name] = config
        except (InvalidConfigError, UnicodeDecodeError, OSError) as exc:
            if isinstance(exc, KeepwarmError):
                error = exc.message
            else:
                where = f"{self.url}/{name}/{FILENAME}"
                error = f"{where} cannot be read: {type(exc).__name__}: {exc}"
            config = self._good.get(name, ModelConfig())
        versions = {
            v: self._version(name, v, files, config)
            for v, files in sorted(model["versions"].items())
        }
        return ModelListing(
            name,
            Path(f"{self.url}/{name}"),
            config,
            error,
            versions,
            blocked=error is not None and name not in self._good,
        )

    def _version(
        self, name: str, version: int, files: dict[str, Any], config: ModelConfig
    ) -> VersionListing:
        url = f"{self.url}/{name}/{version}"
        digest = fingerprint(files)
        key = (name, version)
        stable = self._seen.get(key) == digest
        self._seen[key] = digest
        copied = self._copied.get(key)
        if copied is not None and copied[0] == digest and copied[1].path.exists():
            return copied[1]  # (a copy evicted from the download cache is copied again)
        if MARKER not in files and not stable:
            return VersionListing(version, Path(url), False, _WAITING)
        try:
            local = copy_to_cache(
                url, self.cache_dir, downloads=self.downloads, storage_options=self.storage_options
            )
        except KeepwarmError as exc:
            return VersionListing(version, Path(url), False, f"copying failed: {exc.message}")
        size = sum(int(info.get("size") or 0) for info in files.values())
        verdict = replace(judge(version, local, config), nbytes=size)
        self._copied[key] = (digest, verdict)
        return verdict
