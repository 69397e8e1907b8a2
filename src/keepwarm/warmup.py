"""Warmup: run a freshly loaded model before it takes traffic, so its first request is fast."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from keepwarm.runtimes.base import LoadedModel
from keepwarm.signature import TEXT_KINDS, Signature

DEFAULT_RUNS = 3


def sample_inputs(signature: Signature, batch: int = 1) -> dict[str, np.ndarray] | None:
    """Inputs of the signature's dtypes and shapes (unknown sizes: ``batch`` on the first axis,
    1 elsewhere); None when an input's rank is unknown."""
    inputs: dict[str, np.ndarray] = {}
    for spec in signature.inputs:
        if spec.shape is None:
            return None
        shape = tuple(
            (batch if axis == 0 else 1) if dim is None else dim
            for axis, dim in enumerate(spec.shape)
        )
        if spec.dtype.kind in TEXT_KINDS:
            inputs[spec.name] = np.full(shape, b"", dtype=object)
        else:
            inputs[spec.name] = np.zeros(shape, dtype=spec.dtype)
    return inputs


def warmup(
    model: LoadedModel, samples: Sequence[dict[str, np.ndarray]] = (), runs: int = DEFAULT_RUNS
) -> int:
    """Run ``samples`` (or generated inputs) ``runs`` times; returns the number of calls."""
    requests = list(samples)
    if not requests:
        generated = sample_inputs(model.signature)
        if generated is None:
            return 0
        requests = [generated]
    calls = 0
    for _ in range(runs):
        for request in requests:
            model.predict(model.signature.coerce(model.signature.widen_json(request)))
            calls += 1
    return calls
