"""A model repository's naming rules and version verdict, shared by the local and remote
sources: model names, version numbers, the ready marker, the format check."""

from __future__ import annotations

import re
from pathlib import Path

from keepwarm.config import ModelConfig
from keepwarm.errors import InvalidInputError
from keepwarm.runtimes.base import Runtime
from keepwarm.runtimes.registry import detect_runtime, get_runtime
from keepwarm.sources.listing import VersionListing

MARKER = ".keepwarm-ready"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_model_name(name: str) -> str:
    """``name`` when it is a valid model name, else ``InvalidInputError`` saying why."""
    if not NAME.match(name) or ".." in name:
        raise InvalidInputError(
            f"invalid model name {name!r}: expected 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit, without '..'"
        )
    return name


def version_number(name: str) -> int | None:
    """The version a directory name stands for: a positive integer without leading zeros."""
    if not name.isascii() or not name.isdigit() or name.startswith("0"):
        return None
    return int(name)


def judge(version: int, path: Path, config: ModelConfig) -> VersionListing:
    """The format check: complete, or the runtime's reason why not."""
    try:
        runtime: Runtime = get_runtime(config.runtime) if config.runtime else detect_runtime(path)
    except Exception as exc:  # unknown runtime, or no runtime recognises the files
        return VersionListing(version, path, False, str(exc), None)
    try:
        reason = runtime.incomplete(path)
    except Exception as exc:  # a runtime's bug must not stop the scan of other models
        reason = f"the {runtime.name} runtime could not check the files: {exc!r}"
    if reason is not None:
        reason = f"incomplete {runtime.name} model: {reason}"
    return VersionListing(version, path, reason is None, reason, runtime.name)
