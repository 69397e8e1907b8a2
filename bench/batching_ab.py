"""Batching on against batching off, measured so that the ratio survives a shared machine.

Through the server: two servers run at once (the same models, with and without their
``[batching]`` table); each cell alternates short ``wrk`` runs on one and the other,
``rounds`` times, so that the machine's drift hits both alike. Each side's figures are the
medians over the rounds; the ratio is the median of the per-round ratios (req/s on/off),
the p50 difference the median of the per-round differences.

In-process: ``keepwarm.load`` with batching on and off, ``threads`` threads calling
``predict`` in a loop, the two alternated the same way (the threads figure of issue 9).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hotpath import throughput
from serve import wrk


def interleaved(
    urls: dict[bool, str], bodies: list[Path], c: int, seconds: int, rounds: int, script: Path
) -> dict[str, Any]:
    """``{"off": figures, "on": figures, "ratio": ..., "p50_diff_ms": ...}`` for one cell
    (``seconds`` per run, whole: wrk's unit)."""
    runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for index in range(rounds):
        order = (False, True) if index % 2 == 0 else (True, False)
        for batching in order:
            runs[batching].append(wrk(urls[batching], bodies, c, seconds, script))
    ratios = [on["rps"] / off["rps"] for off, on in zip(runs[False], runs[True], strict=True)]
    diffs = [on["p50_ms"] - off["p50_ms"] for off, on in zip(runs[False], runs[True], strict=True)]
    return {
        "off": _medians(runs[False]),
        "on": _medians(runs[True]),
        "ratio": statistics.median(ratios),
        "p50_diff_ms": statistics.median(diffs),
        "ratios": [round(r, 3) for r in ratios],
    }


def _medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {
        "rps": statistics.median(r["rps"] for r in runs),
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "failed": sum(r.get("failed", 0) for r in runs),
    }


def in_process(
    model_dir: Path, x: np.ndarray, threads: tuple[int, ...], seconds: float, rounds: int
) -> list[dict[str, Any]]:
    """Per thread count: calls/s with batching off and on (medians over alternated
    rounds) and the median of the per-round ratios."""
    import keepwarm

    cache = keepwarm.ModelCache()
    try:
        models = {
            False: keepwarm.load(str(model_dir), batching=False, cache=cache),
            True: keepwarm.load(str(model_dir), batching=True, cache=cache),
        }
        for model in models.values():
            for _ in range(50):
                model.predict(x)
        cells = []
        for n in threads:
            rates: dict[bool, list[float]] = {False: [], True: []}
            for index in range(rounds):
                for batching in (False, True) if index % 2 == 0 else (True, False):
                    call = partial_predict(models[batching], x)
                    rates[batching].append(throughput(call, n, seconds))
            ratios = [on / off for off, on in zip(rates[False], rates[True], strict=True)]
            cells.append(
                {"threads": n, "off": statistics.median(rates[False]),
                 "on": statistics.median(rates[True]), "ratio": statistics.median(ratios),
                 "ratios": [round(r, 3) for r in ratios]}
            )  # fmt: skip
        return cells
    finally:
        cache.close()


def partial_predict(model: Any, x: np.ndarray) -> Callable[[], Any]:
    predict = model.predict
    return lambda: predict(x)
