"""Worker processes: throughput of a GIL-bound Python model, and the cost of a call.

A pure-Python model spending 5 ms of CPU per call (``busy_model.Busy``) is called with
``Model.predict`` from 8 threads for a fixed time: in this process, in one worker process
and in two. Target: two workers serve at least 1.7x the calls per second of one (the GIL
keeps the in-process model at one core; each worker has its own). Reported, not a target:
the per-call overhead of a worker against the same model in this process at batch 1, one
caller, measured with the model doing no work (``busy_ms = 0``: the call's own cost) and
with 5 ms. Prints a table, writes JSON. The machine's other load shows in the figures:
compare only ratios measured in one run.

Memory (``workers_memory.py``, ``--memory-cycles``): MobileNetV2 load/predict/unload
cycles with isolation on and off; target: isolated, the sum of PSS over the server's
processes (the pages of mapped files left out: see workers_memory.py) stays within 10% of
its value after cycle 2.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

import workers_memory
from environment import environment

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.7
THREADS = 8
BUSY_MS = 5.0
X = np.ones((1, 4), np.float32)


def _model(directory: Path, busy_ms: float, processes: int | None) -> Any:
    import keepwarm

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "busy_ms").write_text(str(busy_ms))
    workers: Any = False if processes is None else {"processes": processes}
    return keepwarm.load(directory, options={"class": "busy_model:Busy"}, workers=workers)


def throughput(model: Any, seconds: float) -> float:
    """Calls per second from ``THREADS`` threads calling ``model.predict`` for ``seconds``."""
    counts = [0] * THREADS
    barrier = threading.Barrier(THREADS + 1)
    stop = threading.Event()

    def run(i: int) -> None:
        barrier.wait()
        while not stop.is_set():
            model.predict(X)
            counts[i] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    began = time.perf_counter()
    time.sleep(seconds)  # the measuring window
    stop.set()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - began)


def latency_us(model: Any, calls: int) -> float:
    """Median microseconds of one call, one caller, batch 1."""
    for _ in range(20):
        model.predict(X)
    times = []
    for _ in range(calls):
        began = time.perf_counter()
        model.predict(X)
        times.append((time.perf_counter() - began) * 1e6)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "workers.json")
    parser.add_argument("--quick", action="store_true", help="short windows (noisier)")
    parser.add_argument("--models", type=Path, default=ROOT / "examples" / "models")
    parser.add_argument("--memory-cycles", type=int, help="0: skip (default 20, quick 5)")
    args = parser.parse_args(argv)
    seconds, calls = (2.0, 300) if args.quick else (8.0, 2000)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, processes in (("in process", None), ("1 worker", 1), ("2 workers", 2)):
            model = _model(Path(tmp) / f"busy-{processes}", BUSY_MS, processes)
            rows.append({"setup": label, "calls_per_s": throughput(model, seconds)})
        overhead = {}
        for busy in (0.0, BUSY_MS):
            local = _model(Path(tmp) / f"idle-{busy}-local", busy, None)
            remote = _model(Path(tmp) / f"idle-{busy}-worker", busy, 1)
            here, there = latency_us(local, calls), latency_us(remote, calls)
            overhead[busy] = {
                "in_process_us": here,
                "worker_us": there,
                "overhead_us": there - here,
            }
    one, two = rows[1]["calls_per_s"], rows[2]["calls_per_s"]
    ratio = two / one
    print(f"{'setup (8 threads, 5 ms CPU per call)':38} {'calls/s':>9} {'vs 1 worker':>12}")
    for row in rows:
        print(f"{row['setup']:38} {row['calls_per_s']:>9.1f} {row['calls_per_s'] / one:>12.2f}")
    print(
        f"\n{'per call, batch 1, one caller':30} {'in process':>11} {'worker':>9} {'overhead':>9}"
    )
    for busy, figures in overhead.items():
        print(
            f"{f'model busy {busy:g} ms (median us)':30} {figures['in_process_us']:>11.1f} "
            f"{figures['worker_us']:>9.1f} {figures['overhead_us']:>9.1f}"
        )
    cycles = args.memory_cycles if args.memory_cycles is not None else 5 if args.quick else 20
    if cycles == 1:
        parser.error("--memory-cycles: 0 (skip) or at least 2 (cycle 2 is the reference)")
    ways = workers_memory.WAYS if cycles else ()
    memory = [workers_memory.run_way(args.models, way, cycles) for way in ways]
    if memory:
        print("\nmemory after each MobileNetV2 load/predict/unload cycle (PSS, server + workers)")
        print(workers_memory.table(memory))
    grew = [run.growth for run in memory if run.way == "isolated"]
    memory_ok = all(g <= workers_memory.WITHIN for g in grew)
    verdict = "PASS" if ratio >= TARGET else "FAIL"
    print(f"\n{verdict}  2 workers / 1 worker = {ratio:.2f} (target >= {TARGET})")
    for g in grew:
        print(
            f"{'PASS' if memory_ok else 'FAIL'}  isolated: PSS (file pages left out) max over "
            f"cycles 2..{cycles} is "
            f"{g:+.1%} of cycle 2's (target <= {workers_memory.WITHIN:.0%})"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    report = {**environment(args, ("numpy",)), "target": TARGET, "ratio": ratio}
    report |= {"rows": rows, "overhead": {str(k): v for k, v in overhead.items()}}
    report["memory"] = [
        {**asdict(run), "growth": run.growth, "pss_growth": run.pss_growth} for run in memory
    ]
    args.json.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")
    return 0 if ratio >= TARGET and memory_ok else 1


if __name__ == "__main__":
    sys.exit(main())
