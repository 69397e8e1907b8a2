"""The inputs an optimized model is checked on: a calibration file, the model's warmup
samples, or inputs generated from its signature (in that order of preference).

A calibration file is an ``.npz`` holding one array per input (rows on the first axis)
and, optionally, ``labels`` (one class index per row; then accuracy is reported too), or
a ``.json`` warmup file (a ``{input: nested list}`` request or a list of them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keepwarm.config import FILENAME, load_model_config
from keepwarm.errors import InvalidInputError
from keepwarm.signature import TEXT_KINDS, Signature
from keepwarm.warmup import read_samples

LABELS = "labels"
BATCH = 32  # rows per request when a file holds more
GENERATED_ROWS = 64


@dataclass(frozen=True)
class Samples:
    """Requests (each a batch of rows, checked against the signature) and, when known,
    the label of every row, in order."""

    requests: tuple[dict[str, np.ndarray], ...]
    labels: np.ndarray | None
    origin: str  # said in the report: where the samples came from
    generated: bool = False  # made up from the signature, not real inputs

    @property
    def rows(self) -> int:
        return sum(_rows(request) for request in self.requests)

    def batch(self, size: int) -> dict[str, np.ndarray]:
        """``size`` rows (the samples' rows repeated as needed), for timing."""
        names = self.requests[0].keys()
        joined = {n: np.concatenate([r[n] for r in self.requests]) for n in names}
        index = np.arange(size) % _rows(joined)
        return {name: value[index] for name, value in joined.items()}


def _rows(request: dict[str, np.ndarray]) -> int:
    return len(next(iter(request.values())))


def from_file(path: Path, signature: Signature) -> Samples:
    """The samples in a calibration file (``.npz`` with optional ``labels``, or ``.json``)."""
    if not path.is_file():
        raise InvalidInputError(f"calibration file {path} does not exist")
    if path.suffix.lower() == ".json":
        return _checked(read_samples(path), None, f"calibration file {path}", signature)
    if path.suffix.lower() != ".npz":
        raise InvalidInputError(f"calibration file {path}: expected a .npz or .json file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read calibration file {path}: {exc}") from exc
    inputs = {spec.name for spec in signature.inputs}
    labels = arrays.pop(LABELS) if LABELS in arrays and LABELS not in inputs else None
    counts = {name: len(value) if value.ndim else 0 for name, value in arrays.items()}
    if labels is not None:
        counts[LABELS] = len(labels) if labels.ndim == 1 else -1
    if len(set(counts.values())) != 1 or 0 in counts.values() or -1 in counts.values():
        raise InvalidInputError(
            f"calibration file {path}: every array needs the same number of rows (and "
            f"{LABELS!r} one label per row); got rows {counts}"
        )
    total = next(iter(counts.values()))
    requests = [
        {name: value[start : start + BATCH] for name, value in arrays.items()}
        for start in range(0, total, BATCH)
    ]
    if labels is not None and labels.dtype.kind not in "iu":
        raise InvalidInputError(
            f"calibration file {path}: {LABELS!r} must hold integer class indices, "
            f"got dtype {labels.dtype.name}"
        )
    return _checked(requests, labels, f"calibration file {path}", signature)


def warmup_samples(version: Path, signature: Signature) -> Samples | None:
    """The warmup samples ``model.toml`` names for this version, if it is in a repository."""
    config = load_model_config(version.parent / FILENAME)
    if config.warmup_samples is None or not (version / config.warmup_samples).is_file():
        return None
    file = version / config.warmup_samples
    return _checked(read_samples(file), None, f"warmup samples {file}", signature)


def generated(signature: Signature, rows: int = GENERATED_ROWS, seed: int = 0) -> Samples:
    """Seeded random inputs of the signature's dtypes and shapes (free sizes: ``rows`` on
    the first axis, 1 elsewhere); floats uniform in [0, 1)."""
    rng = np.random.default_rng(seed)
    request: dict[str, np.ndarray] = {}
    for spec in signature.inputs:
        if spec.shape is None:
            raise InvalidInputError(
                f"input {spec.name!r} has no known rank: inputs cannot be generated; "
                "pass a calibration file"
            )
        shape = tuple(
            (rows if axis == 0 else 1) if dim is None else dim
            for axis, dim in enumerate(spec.shape)
        )
        if spec.dtype.kind == "f":
            request[spec.name] = rng.random(shape).astype(spec.dtype)
        elif spec.dtype.kind in "iu":
            request[spec.name] = rng.integers(0, 10, shape).astype(spec.dtype)
        elif spec.dtype.kind == "b":
            request[spec.name] = rng.random(shape) < 0.5
        elif spec.dtype.kind in TEXT_KINDS:
            request[spec.name] = np.full(shape, b"", dtype=object)
        else:
            raise InvalidInputError(f"input {spec.name!r}: cannot generate {spec.dtype.name}")
    count = _rows(request)
    step = BATCH if count > BATCH else count
    requests = [{n: v[i : i + step] for n, v in request.items()} for i in range(0, count, step)]
    return Samples(tuple(requests), None, f"{count} generated rows (seed {seed})", generated=True)


def _checked(
    requests: list[dict[str, np.ndarray]],
    labels: np.ndarray | None,
    origin: str,
    signature: Signature,
) -> Samples:
    if not requests:
        raise InvalidInputError(f"{origin}: holds no samples")
    try:
        checked = tuple(signature.coerce(signature.widen_json(r)) for r in requests)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{origin}: {exc.message}") from exc
    for request in checked:
        counts = {len(value) if value.ndim else 0 for value in request.values()}
        if len(counts) != 1 or 0 in counts:
            raise InvalidInputError(
                f"{origin}: every input of a request needs the same number of rows (at least 1)"
            )
    return Samples(checked, labels, origin)
