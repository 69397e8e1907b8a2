"""Compare an optimized model with its source on samples, and time both in one run."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from keepwarm.errors import ConversionError, InvalidInputError
from keepwarm.optimize.report import Latency, OutputChange, Side
from keepwarm.optimize.samples import LABELS, Samples
from keepwarm.runtimes.base import LoadedModel, files_nbytes

LATENCY_BATCHES = (1, 32)
_ERROR_CHARS = 1000  # of a framework's message


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
        for name, value in _answer(source, request, samples, "source").items():
            expected[name].append(np.asarray(value))
        for name, value in _answer(result, request, samples, "converted").items():
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
        diff = _differences(a, b)
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
            if labels.min() < 0 or labels.max() >= a.shape[-1]:
                raise InvalidInputError(
                    f"{samples.origin}: {LABELS!r} holds class indices from "
                    f"{labels.min()} to {labels.max()}; output {name!r} has "
                    f"{a.shape[-1]} classes: expected indices from 0 to {a.shape[-1] - 1}"
                )
            accuracy = (
                float(np.mean(a.argmax(-1) == labels)),
                float(np.mean(b.argmax(-1) == labels)),
            )
    return tuple(changes), accuracy[0], accuracy[1]


def _differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``|a - b|`` where equal non-finite answers (NaN and NaN, inf and inf: the converted
    model gives what its source gives) count as no difference, and a non-finite answer on
    one side only as an infinite one (NaN would fail every limit, naming no value)."""
    with np.errstate(invalid="ignore"):
        diff: np.ndarray = np.abs(a - b)
    diff[(a == b) | (np.isnan(a) & np.isnan(b))] = 0.0
    diff[np.isnan(diff)] = np.inf
    return diff


def _answer(
    model: LoadedModel, request: dict[str, np.ndarray], samples: Samples, which: str
) -> dict[str, np.ndarray]:
    """The model's answer to one request of the samples; its failure names the model and
    the samples (a source that refuses them, a converted graph that fails where its source
    answers) instead of a framework's traceback."""
    try:
        return model.predict(request)
    except Exception as exc:
        shapes = ", ".join(f"{n}: {list(np.shape(v))}" for n, v in request.items())
        what = f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS]
        if which == "source":
            raise InvalidInputError(
                f"the source model fails on the samples ({samples.origin}; a request of "
                f"{shapes}): {what}"
            ) from None
        raise ConversionError(
            f"the converted model fails on samples its source answers ({samples.origin}; a "
            f"request of {shapes}): {what}",
            format="onnx",
        ) from None


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
