"""Publish an optimized model as the next version of a model in a repository.

The version appears whole, as the README asks of any writer: its files are written into a
hidden directory inside the model directory, the ``.keepwarm-ready`` marker is created
last, then the directory is renamed to the next version number. A repository serving the
model then loads, warms and swaps to it like any new version.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from pathlib import Path

from keepwarm.config import FILENAME, ModelConfig, load_model_config
from keepwarm.errors import InvalidConfigError, InvalidInputError
from keepwarm.sources.layout import MARKER, version_number

GRAPH = "model.onnx"
REPORT = "optimize-report.json"
_ATTEMPTS = 100  # versions taken by concurrent writers before giving up


def check_target(model_dir: Path, source: Path) -> list[Path]:
    """Refuse, before any conversion, a target where an ONNX version could not serve;
    return the files of ``source`` the new version must carry (its warmup samples)."""
    if model_dir.resolve().parent == model_dir.resolve():  # "/": versions /1, /2 ...
        raise InvalidInputError(
            f"--publish {model_dir}: expected a model directory inside a repository, "
            "not the file system's root"
        )
    if model_dir.exists() and not model_dir.is_dir():
        raise InvalidInputError(f"--publish {model_dir}: expected a model directory, found a file")
    if not model_dir.parent.is_dir():
        raise InvalidInputError(
            f"--publish {model_dir}: the repository {model_dir.parent} does not exist"
        )
    config: ModelConfig = load_model_config(model_dir / FILENAME)
    where = model_dir / FILENAME
    if config.runtime not in (None, "onnx"):
        raise InvalidConfigError(
            f"--publish {model_dir}: {where} sets runtime = {config.runtime!r}, so an ONNX "
            'version would not load; remove the key or set it to "onnx"'
        )
    if config.signature not in (None, "serving_default"):
        raise InvalidConfigError(
            f"--publish {model_dir}: {where} sets signature = {config.signature!r}; an ONNX "
            "model has only 'serving_default'"
        )
    if config.warmup_samples is None or config.warmup_runs == 0:
        return []
    samples = source / config.warmup_samples if source.is_dir() else None
    if samples is None or not samples.is_file():
        raise InvalidConfigError(
            f"--publish {model_dir}: {where} names warmup samples {config.warmup_samples!r}, "
            f"which the source {source} does not have: the new version would fail to load"
        )
    return [samples]


def next_version(model_dir: Path) -> int:
    numbers = [v for p in model_dir.iterdir() if (v := version_number(p.name)) is not None]
    return max(numbers, default=0) + 1


def publish(model_dir: Path, files: dict[str, Path], report_json: str) -> int:
    """Write ``files`` (name in the version -> file) and the report as the next version of
    ``model_dir``; return its number."""
    model_dir.mkdir(exist_ok=True)
    staging = model_dir / f".keepwarm-optimize-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        for name, file in files.items():
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, target)
        (staging / REPORT).write_text(report_json)
        (staging / MARKER).touch()  # last: the version is whole
        for _ in range(_ATTEMPTS):
            version = next_version(model_dir)
            target = model_dir / str(version)
            try:
                target.mkdir()  # claim the number: rename() would replace an empty directory
            except FileExistsError:
                continue
            try:
                os.rename(staging, target)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                continue  # a writer filled the claimed directory first
            return version
        raise InvalidInputError(f"--publish {model_dir}: no free version number after retries")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
