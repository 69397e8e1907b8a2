"""Warmup: run a freshly loaded model before it takes traffic, so its first request is fast."""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keepwarm.errors import InvalidConfigError, ModelLoadError, ModelNotFoundError
from keepwarm.runtimes.base import LoadedModel
from keepwarm.settings import WarmupSettings
from keepwarm.signature import TEXT_KINDS, Signature

SKIPPED = "generated warmup skipped"
# Sizes tried, in order, for the unknown dimensions after the first (batch) axis: 1 is the
# cheapest; 32 satisfies common constraints (strides of 32, convolutions over time).
_GENERATED_SIZES = (1, 32)
_NOTE_CHARS = 300
_log = logging.getLogger("keepwarm.warmup")
#: A warm run that raised one of these failed (a ``sys.exit()`` in a Python model is a
#: failure like any other); a ``KeyboardInterrupt`` is never swallowed.
FAILURES = (Exception, SystemExit, GeneratorExit)


def sample_inputs(
    signature: Signature, batch: int = 1, size: int = 1
) -> dict[str, np.ndarray] | None:
    """Inputs of the signature's dtypes and shapes (unknown sizes: ``batch`` on the first
    axis, ``size`` elsewhere); None when an input's rank is unknown."""
    inputs: dict[str, np.ndarray] = {}
    for spec in signature.inputs:
        if spec.shape is None:
            return None
        shape = tuple(
            (batch if axis == 0 else size) if dim is None else dim
            for axis, dim in enumerate(spec.shape)
        )
        if spec.dtype.kind in TEXT_KINDS:
            inputs[spec.name] = np.full(shape, b"", dtype=object)
        else:
            inputs[spec.name] = np.zeros(shape, dtype=spec.dtype)
    return inputs


def warmup(
    model: LoadedModel,
    samples: Sequence[dict[str, np.ndarray]] = (),
    runs: int = WarmupSettings.runs,
    *,
    what: str = "model",
) -> str | None:
    """Run ``samples`` ``runs`` times, or inputs generated from the signature.

    Samples the user supplied must work: one that fails raises ``ModelLoadError`` (the
    load fails). Generated inputs are best effort, since a model may constrain sizes the
    signature leaves unknown (a stride of 32, a convolution over time): when every
    generated size fails, the model is still usable and a note is returned (and logged at
    WARNING): ``"generated warmup skipped: <why>"``. None when warmup ran, or ``runs`` is 0.
    """
    if runs <= 0:
        return None
    if samples:
        for index, request in enumerate(samples):
            try:
                _run(model, request, runs)
            except FAILURES as exc:
                raise ModelLoadError(
                    f"warmup of {what} with supplied sample {index + 1} of {len(samples)} "
                    f"failed: {_why(exc)}"
                ) from exc
        return None
    failures: list[str] = []
    for size in _GENERATED_SIZES:
        generated = sample_inputs(model.signature, size=size)
        if generated is None:
            note = f"{SKIPPED}: an input's rank is unknown, so no input can be generated"
            _log.info("%s: %s", what, note)
            return note
        try:
            _run(model, generated, runs)
        except FAILURES as exc:
            failures.append(f"unknown sizes {size}: {_why(exc)}")
            continue
        return None
    note = f"{SKIPPED}: the model refused generated inputs ({'; '.join(failures)})"
    _log.warning("%s: %s", what, note)
    return note


def _run(model: LoadedModel, request: dict[str, np.ndarray], runs: int) -> None:
    signature = model.signature
    inputs = signature.coerce(signature.widen_json(request))
    for _ in range(runs):
        model.predict(inputs)


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > _NOTE_CHARS:
        text = text[: _NOTE_CHARS - 3] + "..."
    return f"{type(exc).__name__}: {text}"


#: What reading a ``.npz`` archive raises for a file that is not one (numpy calls any such
#: file "pickled (object) data"), a truncated one, or one that cannot be read.
NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` archive at ``path``; raises one of ``NPZ_ERRORS``. The
    file is opened here: ``np.load`` leaves its own file open when the archive is bad."""
    with path.open("rb") as file, np.load(file, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def read_samples(path: Path) -> list[dict[str, Any]]:
    """Sample requests stored with a version: an ``.npz`` of input arrays (one request), or
    a ``.json`` list of ``{input name: nested list}`` requests."""
    if not path.exists():
        raise ModelNotFoundError(f"warmup samples file {path} not found")
    if not path.is_file():  # a FIFO held the load thread until a writer came; /dev/zero
        raise InvalidConfigError(f"{path}: the warmup samples must be a regular file")
    if path.suffix == ".npz":
        try:
            return [read_npz(path)]
        except NPZ_ERRORS as exc:
            raise InvalidConfigError(
                f"{path}: expected a .npz archive of input arrays, but it cannot be read "
                f"({type(exc).__name__}: {exc})"
            ) from None
    try:
        requests = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:  # not UTF-8, not JSON, too deep
        raise InvalidConfigError(
            f"{path}: expected JSON sample requests, but it cannot be read "
            f"({type(exc).__name__}: {exc})"
        ) from None
    if isinstance(requests, dict):
        requests = [requests]
    if not isinstance(requests, list) or not all(isinstance(r, dict) for r in requests):
        raise InvalidConfigError(
            f"{path}: expected a JSON object of input name to values, or a list of them"
        )
    return [{name: _array(value, path, name) for name, value in r.items()} for r in requests]


def _array(value: Any, path: Path, name: str) -> np.ndarray:
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise InvalidConfigError(f"{path}: input {name!r} is not a tensor: {exc}") from None
