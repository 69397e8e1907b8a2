"""Compare an optimized model with its source on samples, and time both in one run."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from keepwarm.errors import ConversionError
from keepwarm.optimize.report import Latency, OutputChange, Side
from keepwarm.optimize.samples import Samples
from keepwarm.runtimes.base import LoadedModel, files_nbytes

LATENCY_BATCHES = (1, 32)


def side(model: LoadedModel, path: Path, format: str) -> Side:
    return Side(str(path), format, model.nbytes, model.nbytes_source, files_nbytes(path))


def compare(
    source: LoadedModel, result: LoadedModel, samples: Samples
) -> tuple[tuple[OutputChange, ...], float | None, float | None]:
    """Per output: max and mean absolute difference and top-1 agreement; and the two
    accuracies when ``samples`` has labels (on the first output with a class axis)."""
    wanted = [spec.name for spec in source.signature.outputs]
    have = [spec.name for spec in result.signature.outputs]
    if sorted(wanted) != sorted(have):
        raise ConversionError(
            f"the converted model's outputs {have} are not the source's {wanted}", format="onnx"
        )
    expected: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
    got: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
    for request in samples.requests:
        for name, value in source.predict(request).items():
            expected[name].append(np.asarray(value))
        for name, value in result.predict(request).items():
            got[name].append(np.asarray(value))
    changes = []
    accuracy: tuple[float | None, float | None] = (None, None)
    for name in wanted:
        a = np.concatenate(expected[name]).astype(np.float64)
        b = np.concatenate(got[name]).astype(np.float64)
        if a.shape != b.shape:
            raise ConversionError(
                f"output {name!r}: the converted model answers shape {list(b.shape)}, "
                f"the source {list(a.shape)}",
                format="onnx",
            )
        diff = np.abs(a - b)
        classes = a.ndim >= 2 and a.shape[-1] >= 2
        agreement = float(np.mean(a.argmax(-1) == b.argmax(-1))) if classes else None
        changes.append(
            OutputChange(
                name,
                float(diff.max()) if diff.size else 0.0,
                float(diff.mean()) if diff.size else 0.0,
                agreement,
            )
        )
        labels = samples.labels
        if classes and accuracy[0] is None and labels is not None and a.ndim == 2:
            accuracy = (
                float(np.mean(a.argmax(-1) == labels)),
                float(np.mean(b.argmax(-1) == labels)),
            )
    return tuple(changes), accuracy[0], accuracy[1]


def latencies(
    source: LoadedModel,
    result: LoadedModel,
    samples: Samples,
    runs: int,
    batches: Sequence[int] = LATENCY_BATCHES,
) -> tuple[Latency, ...]:
    """Median milliseconds per call at each batch size, source and result alternating
    (so both see the same machine); batch sizes the model's shape forbids are left out."""
    measured = []
    for size in batches:
        batch = samples.batch(size)
        if not _allowed(source, batch) or not _allowed(result, batch):
            continue
        times: tuple[list[float], list[float]] = ([], [])
        for model in (source, result):
            model.predict(batch)  # first-call costs are not latency
        for _ in range(runs):
            for model, into in zip((source, result), times, strict=True):
                started = time.perf_counter()
                model.predict(batch)
                into.append(time.perf_counter() - started)
        measured.append(
            Latency(size, 1000 * statistics.median(times[0]), 1000 * statistics.median(times[1]))
        )
    return tuple(measured)


def _allowed(model: LoadedModel, batch: dict[str, np.ndarray]) -> bool:
    for spec in model.signature.inputs:
        if spec.shape and spec.shape[0] is not None and spec.shape[0] != len(batch[spec.name]):
            return False
    return True
