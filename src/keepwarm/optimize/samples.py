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
from keepwarm.errors import InvalidInputError, KeepwarmError
from keepwarm.signature import TEXT_KINDS, Signature
from keepwarm.warmup import NPZ_ERRORS, read_npz, read_samples

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
    if not path.exists():
        raise InvalidInputError(f"calibration file {path} does not exist")
    if not path.is_file():  # a directory; a FIFO would hold the command for a writer
        raise InvalidInputError(
            f"calibration file {path}: not a regular file; expected a .npz or .json file"
        )
    if path.suffix.lower() not in (".npz", ".json"):
        raise InvalidInputError(f"calibration file {path}: expected a .npz or .json file")
    if path.suffix.lower() == ".json":
        try:
            read = read_samples(path)
        except KeepwarmError as exc:  # not JSON, not requests: named by read_samples
            raise InvalidInputError(f"calibration file {exc.message}") from exc
        return _checked(read, None, f"calibration file {path}", signature)
    try:
        arrays = read_npz(path)
    except NPZ_ERRORS as exc:
        raise InvalidInputError(
            f"calibration file {path}: expected a .npz archive of input arrays, but it "
            f"cannot be read ({type(exc).__name__}: {exc})"
        ) from None
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
    fixed = fixed_rows(signature)
    if fixed is not None and total % fixed:
        raise InvalidInputError(
            f"calibration file {path}: the model takes exactly {fixed} rows per call (its "
            f"inputs' first axis); the file has {total}: expected a multiple of {fixed}"
        )
    step = BATCH if fixed is None else fixed
    requests = [
        {name: value[start : start + step] for name, value in arrays.items()}
        for start in range(0, total, step)
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
    the first axis, or the size the signature fixes there; 1 elsewhere); floats uniform
    in [0, 1)."""
    rng = np.random.default_rng(seed)
    fixed = fixed_rows(signature)
    rows = rows if fixed is None else fixed
    request: dict[str, np.ndarray] = {}
    for spec in signature.inputs:
        if spec.shape is None:
            raise InvalidInputError(
                f"input {spec.name!r} has no known rank: inputs cannot be generated; "
                "pass a calibration file"
            )
        if not spec.shape:  # the samples are rows: a scalar has none
            raise InvalidInputError(
                f"input {spec.name!r} is a scalar (shape []): keepwarm optimize checks a "
                "model on rows of samples, which a scalar input does not have"
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
    step = count if fixed is not None or count <= BATCH else BATCH
    requests = [{n: v[i : i + step] for n, v in request.items()} for i in range(0, count, step)]
    return Samples(tuple(requests), None, f"{count} generated rows (seed {seed})", generated=True)


def fixed_rows(signature: Signature) -> int | None:
    """The rows per call the signature fixes on its inputs' first axis (a model exported
    with a fixed batch size), or None when it is free; inputs that fix different sizes
    have no rows in common to sample, and are refused."""
    sizes = {s.shape[0] for s in signature.inputs if s.shape and s.shape[0] is not None}
    if len(sizes) > 1:
        named = ", ".join(f"{s.name!r}: {s.shape[0]}" for s in signature.inputs if s.shape)
        raise InvalidInputError(
            f"the model's inputs fix different sizes on their first axis ({named}): "
            "keepwarm optimize checks a model on rows of samples, one per input and row"
        )
    return next(iter(sizes), None)


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
