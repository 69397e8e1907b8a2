"""Warmup: run a freshly loaded model before it takes traffic, so its first request is fast."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keepwarm.errors import InvalidConfigError, ModelNotFoundError
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


def read_samples(path: Path) -> list[dict[str, Any]]:
    """Sample requests stored with a version: an ``.npz`` of input arrays (one request), or
    a ``.json`` list of ``{input name: nested list}`` requests."""
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
