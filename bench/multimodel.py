"""Many models, one budget: keepwarm's cache on a skewed stream, against the optimum.

20 ONNX MLPs (64-128-10, different random weights, all one size) behind one
``keepwarm.ModelCache`` whose budget fits 5: ``max_models=5`` and ``max_bytes`` = 5 x one
model's file size (the figure the manager reserves before a load; a loaded model then
holds its measured ``nbytes``, which is no larger). 8 threads send a Zipf(s=1.0) stream
of requests (5,000; 1,500 with ``--quick``), one ``Model.predict`` each: one lease, so
one access, loading on a miss.

The cache's ``on_access`` hook records the order in which requests actually reached it.
On that same order are replayed the offline optimum (Belady, demand admission) and plain
LRU, each with 5 slots (``bench/replay.py``). Conventions:

- keepwarm's hit ratio is 1 - loads / requests: a request that joined a load already in
  flight (single-flight, counted as "coalesced") is not a load, just as in the replays a
  request for a resident key is a hit. Coalesced requests are the loads single-flight saved.
- "hits while loads run": requests that found their model READY and whose time overlapped
  a load in flight (the span of a request that triggered or joined a load). All main-phase
  hits are reported too.
- baseline: a second cache holding all 20 models (preloaded), the same 8 threads, the same
  number of requests from the same stream; all hits.

Targets: hit ratio >= 0.9 x the optimum; hit p99 while loads run <= 1.5 x the baseline's
p99; errors = 0. Prints a table and writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import bisect
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from environment import environment as recorded_environment

sys.path.insert(0, str(Path(__file__).resolve().parent))

from multimodel_report import print_table, targets
from multimodel_setup import (
    BASELINE_ROUNDS,
    MODELS,
    ORT_OPTIONS,
    REQUESTS,
    SEED,
    SHAPE,
    SLOTS,
    THREADS,
    ZIPF_S,
    build_models,
)
from replay import belady_hits, lru_hits, zipf_stream

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ the runs


@dataclass
class Phase:
    """One run of the stream through a cache by ``THREADS`` threads."""

    latency_ms: np.ndarray
    start: np.ndarray
    end: np.ndarray
    hit: np.ndarray  # the model was READY when the request reached the cache
    order: list[Hashable]
    errors: list[str]
    seconds: float
    counters: dict[str, int] = field(default_factory=dict)


def run_phase(
    cache: Any,
    models: Sequence[Any],
    stream: Sequence[int],
    order: list[Hashable],
    local: threading.local,
) -> Phase:
    n = len(stream)
    start, end = np.zeros(n), np.zeros(n)
    hit = np.zeros(n, dtype=bool)
    errors: list[str] = []
    x = np.random.default_rng(1).standard_normal((1, SHAPE[0]), dtype=np.float32)
    lock = threading.Lock()
    position = 0
    barrier = threading.Barrier(THREADS + 1)

    def worker() -> None:
        nonlocal position
        barrier.wait()
        while True:
            with lock:
                i = position
                position += 1
            if i >= n:
                return
            local.hit = False
            began = time.perf_counter()
            try:
                models[stream[i]].predict(x)
            except Exception as exc:  # counted and reported: the target is zero
                errors.append(f"{type(exc).__name__}: {exc}")
            end[i] = time.perf_counter()
            start[i] = began
            hit[i] = local.hit

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    return Phase(
        (end - start) * 1e3,
        start,
        end,
        hit,
        list(order),
        errors,
        seconds,
        dict(cache.manager.counters),
    )


def overlapping(phase: Phase) -> np.ndarray:
    """Hits whose span overlaps a request that triggered or joined a load."""
    spans = sorted(zip(phase.start[~phase.hit], phase.end[~phase.hit], strict=True))
    merged: list[list[float]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    starts = [a for a, _ in merged]
    result = np.zeros(len(phase.hit), dtype=bool)
    for i in np.flatnonzero(phase.hit):
        j = bisect.bisect_right(starts, phase.end[i]) - 1  # last load span starting before
        result[i] = j >= 0 and merged[j][1] >= phase.start[i]
    return result


def percentiles(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {"n": 0, "p50_ms": float("nan"), "p99_ms": float("nan")}
    return {
        "n": len(values),
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
    }


def bench(paths: Sequence[Path], requests: int, seed: int) -> dict[str, Any]:
    import keepwarm

    stream = zipf_stream(requests, MODELS, ZIPF_S, seed)
    local = threading.local()
    order: list[Hashable] = []

    def record(key: Hashable, hit: bool) -> None:  # under the cache's lock, in its thread
        order.append(key)
        local.hit = hit

    # The sizes: the file (what the manager reserves) and what a loaded model reports.
    file_bytes = {p.stat().st_size for p in paths}
    assert len(file_bytes) == 1, f"the models differ in size: {sorted(file_bytes)}"
    file_size = file_bytes.pop()
    probe = keepwarm.ModelCache(warmup=False)
    model_nbytes = probe.load(paths[0], options=ORT_OPTIONS).nbytes
    probe.close()
    unit = max(file_size, model_nbytes)

    cache = keepwarm.ModelCache(max_models=SLOTS, max_bytes=SLOTS * unit, on_access=record)
    models = [cache.handle(p, options=ORT_OPTIONS) for p in paths]
    main = run_phase(cache, models, stream, order, local)
    load_seconds = cache.manager.load_seconds
    cache.close()

    full = keepwarm.ModelCache(max_models=MODELS, on_access=record)
    preloaded = [full.load(p, options=ORT_OPTIONS) for p in paths]
    rounds = []
    for _ in range(BASELINE_ROUNDS):
        order.clear()
        rounds.append(run_phase(full, preloaded, stream, order, local))
    full.close()
    rounds.sort(key=lambda phase: float(np.percentile(phase.latency_ms, 99)))
    baseline = rounds[len(rounds) // 2]

    loads = main.counters["loads"]
    optimum = belady_hits(main.order, SLOTS)
    lru = lru_hits(main.order, SLOTS)
    during = overlapping(main)
    return {
        "requests": requests,
        "recorded": len(main.order),
        "budget": {
            "max_models": SLOTS,
            "max_bytes": SLOTS * unit,
            "file_bytes": file_size,
            "model_nbytes": model_nbytes,
            "unit": "file size" if unit == file_size else "Model.nbytes",
        },
        "hit_ratio": {
            "keepwarm": 1 - loads / requests,
            "belady": optimum / len(main.order),
            "lru": lru / len(main.order),
            "keepwarm_ready_on_arrival": float(main.hit.mean()),
        },
        "hits_during_loads": percentiles(main.latency_ms[during]),
        "hits_all_main": percentiles(main.latency_ms[main.hit]),
        "misses_main": percentiles(main.latency_ms[~main.hit]),
        "baseline": {
            **percentiles(baseline.latency_ms[baseline.hit]),
            "all_hits": bool(baseline.hit.all()),
            "p99_ms_rounds": [float(np.percentile(p.latency_ms, 99)) for p in rounds],
        },
        # Requests that started a load are misses - coalesced; loads beyond that are
        # reloads of a model evicted before the request that loaded it could use it.
        "extra_loads": loads - (main.counters["misses"] - main.counters["coalesced"]),
        "counters": main.counters,
        "load_seconds_total": load_seconds,
        "errors": len(main.errors) + len(baseline.errors),
        "error_samples": (main.errors + baseline.errors)[:5],
        "seconds": {"main": main.seconds, "baseline": sum(p.seconds for p in rounds)},
    }


def environment(args: argparse.Namespace) -> dict[str, Any]:
    return {
        **recorded_environment(args, ("onnxruntime", "onnx")),
        "setup": {
            "models": MODELS,
            "shape": SHAPE,
            "slots": SLOTS,
            "threads": THREADS,
            "zipf_s": ZIPF_S,
            "ort_options": ORT_OPTIONS,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{REQUESTS['quick']} requests instead of {REQUESTS['full']}",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=ROOT / "bench" / "results" / "multimodel.json",
        help="write the results here",
    )
    parser.add_argument(
        "--models-dir", type=Path, help="build the models here and reuse them (default: a temp dir)"
    )
    parser.add_argument("--seed", type=int, default=SEED, help="the stream's seed")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    workdir = args.models_dir or Path(tempfile.mkdtemp(prefix="keepwarm-multimodel-"))
    try:
        paths = build_models(workdir)
        results = bench(paths, REQUESTS["quick" if args.quick else "full"], args.seed)
    finally:
        if args.models_dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    results["seconds"]["total"] = time.perf_counter() - started
    found = targets(results)
    print_table(results, found)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    report = {**environment(args), "results": results, "targets": found}
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json} ({results['seconds']['total']:.1f} s in all)")
    return 0 if all(t["pass"] for t in found) else 1


if __name__ == "__main__":
    sys.exit(main())
