"""What a load gets beside its runtime: the version directory it takes, the worker
processes (``[workers]``, or isolation from the settings) it runs in, and the batcher
(``[batching]``) its predictions go through. ``model.toml`` beside the versions says so,
or the caller (``keepwarm.load(..., batching=..., workers=...)``) does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keepwarm.batching.merge import PadAxes
from keepwarm.batching.model import BatchedModel
from keepwarm.config import FILENAME as CONFIG_FILE
from keepwarm.config import load_model_config
from keepwarm.config_batching import BatchingConfig
from keepwarm.config_workers import WorkersConfig
from keepwarm.errors import ModelNotFoundError
from keepwarm.runtimes.base import LoadedModel
from keepwarm.settings import BatchingSettings, WorkerSettings
from keepwarm.sources.layout import version_number

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


def model_name(path: Path) -> str:
    """A model's name for messages: ``<name>/<version>`` gives ``name``."""
    return path.parent.name if version_number(path.name) is not None else path.stem


def workers_for(
    found: Path,
    workers: WorkersConfig | None,
    settings: WorkerSettings | None,
    read_toml: bool,
) -> WorkersConfig | None:
    """The model's ``[workers]`` (given, or from the model.toml in ``found`` when
    ``read_toml``), or isolation from ``settings``; None: in this process (always, when
    ``settings`` is None: a worker's own loads)."""
    if settings is None or workers is not None:
        return workers
    if read_toml and found.is_dir():
        toml = load_model_config(found / CONFIG_FILE).workers
        if toml is not None:
            return toml.with_defaults(settings)
    return WorkersConfig(isolate=True) if settings.isolate else None


def batching_for(
    found: Path, batching: BatchingConfig | None, toml_defaults: BatchingSettings | None
) -> BatchingConfig | None:
    """The model's ``[batching]``: given, or (with ``toml_defaults``, the keys it leaves
    out) from the model.toml in ``found``; None: off."""
    if batching is not None or toml_defaults is None or not found.is_dir():
        return batching
    toml = load_model_config(found / CONFIG_FILE).batching
    return None if toml is None else toml.with_defaults(toml_defaults)


def batched(
    model: LoadedModel, path: Path, batching: BatchingConfig, options: dict[str, Any]
) -> BatchedModel:
    """``model`` (loaded from the version directory ``path``) behind its batcher."""
    processes = getattr(model, "processes", None)  # a WorkerModel: a slot per process
    return BatchedModel(
        model,
        name=model_name(path),
        version=version_number(path.name),
        max_batch_size=batching.max_batch_size,
        max_delay_ms=batching.max_delay_ms,
        max_queue=batching.max_queue,
        pad_axes=PadAxes.of(batching.pad_axes),
        options=options,
        executor=getattr(model, "executor", None),
        slots=processes,
        run_alone=batching.run_alone,
    )
