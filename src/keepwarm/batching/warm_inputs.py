"""A bucket's warm inputs for ``BatchedModel.warm_buckets``: the first of the model's
warmup samples repeated to the bucket's rows, else inputs generated from its signature;
failing to make them (a MemoryError past the machine's memory) is the bucket's failure,
said as a failed warm run's."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from keepwarm.signature import Signature
from keepwarm.warmup import FAILURES, sample_inputs


def warm_inputs(
    signature: Signature, bucket: int, samples: Sequence[Mapping[str, np.ndarray]]
) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """``bucket``'s warm inputs, or why they could not be made (a MemoryError past the
    machine's memory is the bucket's failure, as its run's; it escaped the thread)."""
    try:
        return bucket_inputs(signature, bucket, samples), None
    except FAILURES as exc:
        return None, failed(bucket, exc)


def bucket_inputs(
    signature: Signature, bucket: int, samples: Sequence[Mapping[str, np.ndarray]]
) -> dict[str, np.ndarray] | None:
    """``bucket`` rows of the first sample, else generated (None: an unknown rank)."""
    if samples:
        first = signature.coerce(signature.widen_json(samples[0]))
        return {name: _rows(array, bucket) for name, array in first.items()}
    return sample_inputs(signature, batch=bucket)


def failed(bucket: int, exc: BaseException) -> str:
    """A bucket's warm failure, as ``warm_failure`` and the warmup note say it."""
    return f"{bucket}: {type(exc).__name__}: {str(exc)[:120]}"


def _rows(array: np.ndarray, rows: int) -> np.ndarray:
    """``rows`` rows made from ``array``'s (repeated as needed)."""
    have = array.shape[0]
    if have == 0:
        return array
    taken: np.ndarray = np.take(array, np.arange(rows) % have, axis=0)
    return taken
