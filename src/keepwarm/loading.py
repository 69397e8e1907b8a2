"""From a URI and options to a loaded model: resolve, pick the version, pick the runtime."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keepwarm.errors import ModelNotFoundError, UnsafeFormatError
from keepwarm.runtimes.base import LoadedModel, Runtime, files_nbytes
from keepwarm.runtimes.registry import detect_runtime, get_runtime
from keepwarm.sources.filesystem import version_number
from keepwarm.sources.resolve import local_path_or_none
from keepwarm.warmup import read_samples, warmup

# A directory holding one of these is a model itself, even with numbered children.
_SAVEDMODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


def select_version(path: Path, version: int | None) -> Path:
    """``path`` itself, or its ``<version>/`` child when ``path`` is a versioned model dir."""
    if not path.is_dir():
        if version is not None:
            raise ModelNotFoundError(f"version {version} asked for, but {path} is a file")
        return path
    versions = sorted(
        v for p in path.iterdir() if p.is_dir() and (v := version_number(p.name)) is not None
    )
    if version is not None:
        if version not in versions:
            raise ModelNotFoundError(
                f"version {version} of {path} not found; versions present: {versions or 'none'}"
            )
        return path / str(version)
    if versions and not any((path / name).exists() for name in _SAVEDMODEL_FILES):
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
        local = local_path_or_none(self.uri)
        if local is None:
            return 0  # unknown until fetched; the budget is corrected after the load
        try:
            return files_nbytes(select_version(local, self.version))
        except (OSError, ModelNotFoundError):
            return 0  # the load reports the real error

    def pick_runtime(self, path: Path) -> Runtime:
        name = self.runtime or ("python" if "class" in self.options else None)
        runtime = get_runtime(name) if name else detect_runtime(path)
        self.format = runtime.name
        if runtime.unsafe and self.options.get("allow_unsafe") is not True:
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

    def warmup(self, model: LoadedModel) -> str | None:
        """Warm ``model`` up; a note for its status when generated warmup was skipped.
        Raises when supplied samples fail (the load fails)."""
        if self.warmup_runs <= 0:
            return None
        samples = list(self.warmup_samples)
        if self.warmup_file is not None:
            samples.extend(read_samples(self.warmup_file))
        return warmup(model, samples, self.warmup_runs, what=self.description)
