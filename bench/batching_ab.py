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

import argparse
import json
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from serve import MODELS, ROOT, inputs, wrk


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
    ratios = [on["rps"] / off["rps"] if off["rps"] else float("nan")  # no answer: no ratio
              for off, on in zip(runs[False], runs[True], strict=True)]  # fmt: skip
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
        **{
            key: statistics.median(r[key] for r in runs)
            for key in ("cpu_us", "switches")
            if key in runs[0]
        },  # in-process only
    }


def in_process(
    model_dir: Path, x: np.ndarray, threads: tuple[int, ...], seconds: float, rounds: int
) -> list[dict[str, Any]]:
    """Per thread count: calls/s, p50 (ms) and process CPU µs per call with batching off
    and on (medians over alternated rounds), the median of the per-round req/s ratios
    (on/off) and of the per-round p50 differences (on - off)."""
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
            runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
            for index in range(rounds):
                for batching in (False, True) if index % 2 == 0 else (True, False):
                    runs[batching].append(timed_loop(models[batching].predict, x, n, seconds))
            pairs = list(zip(runs[False], runs[True], strict=True))
            ratios = [on["rps"] / off["rps"] for off, on in pairs]
            diffs = [on["p50_ms"] - off["p50_ms"] for off, on in pairs]
            off, on = _medians(runs[False]), _medians(runs[True])
            cells.append(
                {"threads": n, "off": off["rps"], "on": on["rps"],
                 "ratio": statistics.median(ratios), "ratios": [round(r, 3) for r in ratios],
                 "p50_off_ms": off["p50_ms"], "p50_on_ms": on["p50_ms"],
                 "p50_diff_ms": statistics.median(diffs),
                 "cpu_us_off": off["cpu_us"], "cpu_us_on": on["cpu_us"],
                 "switches_off": off["switches"], "switches_on": on["switches"]}
            )  # fmt: skip
        return cells
    finally:
        cache.close()


def timed_loop(
    predict: Callable[[np.ndarray], Any], x: np.ndarray, threads: int, seconds: float
) -> dict[str, float]:
    """``threads`` threads calling ``predict(x)`` in a loop for ``seconds``: calls/s, the
    p50 and p99 of the calls' times (ms), and the process's CPU µs and context switches
    per call (the least disturbed by other work on the machine)."""
    stop = threading.Event()
    times: list[list[float]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def worker(mine: list[float]) -> None:
        clock = time.perf_counter
        barrier.wait()
        while not stop.is_set():
            began = clock()
            predict(x)
            mine.append(clock() - began)

    pool = [threading.Thread(target=worker, args=(t,)) for t in times]
    for t in pool:
        t.start()
    barrier.wait()
    started, cpu, switches = time.perf_counter(), time.process_time(), _switches()
    stop.wait(seconds)  # the measuring window, not synchronisation
    stop.set()
    for t in pool:
        t.join()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    switches = _switches() - switches
    every = np.concatenate([np.asarray(t) for t in times]) * 1000.0
    calls = max(1, len(every))
    return {
        "rps": len(every) / elapsed,
        "p50_ms": float(np.percentile(every, 50)),
        "p99_ms": float(np.percentile(every, 99)),
        "cpu_us": cpu * 1e6 / calls,
        "switches": switches / calls,
    }


def _switches() -> int:
    """The process's context switches so far (every thread's, voluntary or not)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_nvcsw + usage.ru_nivcsw


def bare_copy(model_dir: Path, dest: Path) -> Path:
    """A copy of ``model_dir`` in ``dest`` without its ``model.toml``: batching as
    ``keepwarm.load`` is told only."""
    copy = dest / model_dir.name
    shutil.copytree(model_dir, copy)
    (copy / "model.toml").unlink(missing_ok=True)
    return copy


def main() -> int:
    """The in-process cells alone (``--model``, ``--threads``), printed as a table."""
    parser = argparse.ArgumentParser(description="keepwarm.load with batching on against off")
    parser.add_argument("--models", type=Path, default=ROOT / ".test-cache/examples/models")
    parser.add_argument("--model", default="mlp", choices=MODELS)
    parser.add_argument("--threads", default="1,2,4,8,32", help="thread counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--json", type=Path, help="write the cells here")
    args = parser.parse_args()
    threads = tuple(int(n) for n in args.threads.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = bare_copy(args.models / args.model, Path(tmp))
        cells = in_process(model_dir, inputs(args.model, 1)[0], threads, args.seconds, args.rounds)
    print(f"{'threads':>7} {'off/s':>8} {'on/s':>8} {'ratio':>6} {'p50 off':>8} {'p50 on':>8} "
          f"{'diff ms':>8} {'cpu off':>8} {'cpu on':>8} {'cs off':>6} {'cs on':>6}  "
          "per-round ratios")  # fmt: skip
    for c in cells:
        print(f"{c['threads']:7d} {c['off']:8.0f} {c['on']:8.0f} {c['ratio']:6.2f} "
              f"{c['p50_off_ms']:8.3f} {c['p50_on_ms']:8.3f} {c['p50_diff_ms']:+8.3f} "
              f"{c['cpu_us_off']:8.0f} {c['cpu_us_on']:8.0f} {c['switches_off']:6.1f} "
              f"{c['switches_on']:6.1f}  {c['ratios']}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "cells": cells}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
