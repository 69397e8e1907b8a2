"""From a URI and options to a loaded model: resolve, pick the version, pick the runtime."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from keepwarm.errors import InvalidConfigError, ModelNotFoundError, UnsafeFormatError
from keepwarm.runtimes.base import LoadedModel, Runtime, files_nbytes
from keepwarm.runtimes.registry import detect_runtime, get_runtime
from keepwarm.warmup import warmup

_LOCAL_SCHEMES = ("", "file")


def canonical_uri(uri: str | os.PathLike[str]) -> str:
    """The cache key of a URI: an absolute path for local models, the URL otherwise."""
    text = os.fspath(uri)
    scheme = urlparse(text).scheme
    if scheme == "file":
        text = urlparse(text).path
    elif scheme and len(scheme) > 1:  # a one-letter scheme is a Windows drive
        return text
    return os.path.abspath(os.path.expanduser(text))


def is_local(uri: str) -> bool:
    return urlparse(uri).scheme in _LOCAL_SCHEMES or len(urlparse(uri).scheme) == 1


def select_version(path: Path, version: int | None) -> Path:
    """``path`` itself, or its ``<version>/`` child when ``path`` is a versioned model dir."""
    if not path.is_dir():
        if version is not None:
            raise ModelNotFoundError(f"version {version} asked for, but {path} is a file")
        return path
    versions = sorted(
        int(p.name) for p in path.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0
    )
    if version is not None:
        if version not in versions:
            raise ModelNotFoundError(
                f"version {version} of {path} not found; versions present: {versions or 'none'}"
            )
        return path / str(version)
    if versions and not any((path / name).exists() for name in ("saved_model.pb",)):
        return path / str(versions[-1])
    return path


@dataclass
class RuntimeSpec:
    """A ``LoadSpec`` for the manager: one URI, loaded by one runtime."""

    uri: str
    version: int | None = None
    runtime: str | None = None
    signature: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    warmup_samples: tuple[dict[str, Any], ...] = ()
    warmup_runs: int = 3
    warmup_file: Path | None = None  # sample requests stored with the version (.npz, .json)
    config: Any = None  # the model.toml this spec was made from (repository)
    format: str | None = None  # the detected runtime's name, once known

    @property
    def description(self) -> str:
        where = self.uri if self.version is None else f"{self.uri} (version {self.version})"
        return f"{self.format or 'model'} at {where}"

    def local_path(self) -> Path:
        from keepwarm.sources.resolve import resolve_uri

        return select_version(resolve_uri(self.uri), self.version)

    def estimate_nbytes(self) -> int:
        if not is_local(self.uri):
            return 0  # unknown until fetched; the budget is corrected after the load
        try:
            return files_nbytes(select_version(Path(canonical_uri(self.uri)), self.version))
        except (OSError, ModelNotFoundError):
            return 0  # the load reports the real error

    def pick_runtime(self, path: Path) -> Runtime:
        name = self.runtime or ("python" if "class" in self.options else None)
        runtime = get_runtime(name) if name else detect_runtime(path)
        self.format = runtime.name
        if runtime.unsafe and not self.options.get("allow_unsafe"):
            raise UnsafeFormatError(
                f"{path} is a {runtime.name} file, a format that runs code when loaded; "
                "pass options={'allow_unsafe': True} if you trust it",
                format=runtime.name,
            )
        return runtime

    def load(self) -> LoadedModel:
        path = self.local_path()
        runtime = self.pick_runtime(path)
        return runtime.load(path, signature=self.signature, options=self.options)

    def warmup(self, model: LoadedModel) -> None:
        if self.warmup_runs > 0:
            samples = list(self.warmup_samples)
            if self.warmup_file is not None:
                samples.extend(read_samples(self.warmup_file))
            warmup(model, samples, self.warmup_runs)


def read_samples(path: Path) -> list[dict[str, Any]]:
    """Sample requests stored with a version: an ``.npz`` of input arrays (one request), or
    a ``.json`` list of ``{input name: nested list}`` requests."""
    import json

    import numpy as np

    if not path.exists():
        raise ModelNotFoundError(f"warmup samples file {path} not found")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return [{name: data[name] for name in data.files}]
    requests = json.loads(path.read_text())
    if isinstance(requests, dict):
        requests = [requests]
    if not isinstance(requests, list) or not all(isinstance(r, dict) for r in requests):
        raise InvalidConfigError(
            f"{path}: expected a JSON object of input name to values, or a list of them"
        )
    return [{name: np.asarray(value) for name, value in r.items()} for r in requests]


def freeze_options(options: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    """A hashable form of ``options`` (the cache key includes it)."""
    if not options:
        return ()
    frozen = []
    for name, value in sorted(options.items()):
        try:
            hash(value)
        except TypeError:
            value = repr(value)
        frozen.append((name, value))
    if not all(isinstance(name, str) for name, _ in frozen):
        raise InvalidConfigError("options keys must be strings")
    return tuple(frozen)
