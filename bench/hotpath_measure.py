"""How ``bench/hotpath.py`` times its variants: per call on one thread, and throughput of
several threads in short slices alternated variant by variant, judged per round."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

Call = Callable[[], Any]


def per_call(variants: dict[str, Call], calls: int, block: int = 2000) -> dict[str, list[int]]:
    """Nanoseconds of each call, the variants' blocks interleaved (drift hits all alike)."""
    times: dict[str, list[int]] = {name: [] for name in variants}
    clock = time.perf_counter_ns
    for call in variants.values():  # warm every path first
        for _ in range(200):
            call()
    done = 0
    while done < calls:
        n = min(block, calls - done)
        for name, call in variants.items():
            out = times[name]
            for _ in range(n):
                t = clock()
                call()
                out.append(clock() - t)
        done += n
    return times


def thread_rounds(
    variants: dict[str, Call],
    pairs: Mapping[str, str],
    threads: int,
    rounds: int,
    seconds: float,
) -> dict[str, Any]:
    """Throughput of ``threads`` threads that switch variant together every ``seconds``
    (a slice): ``rounds`` rounds of one slice per variant, the order rotated round by
    round. ``pairs`` maps a variant to the direct call it is judged against. The threads
    run from the first slice to the last (none is started or joined between slices), and
    each round's ratio divides two slices a few milliseconds apart, so the machine's drift
    (2-4x within minutes on a shared machine) falls on both alike; the figure is the
    median of the rounds' ratios, not a ratio of medians taken apart. A call counts in
    the slice it started in."""
    names = list(variants)
    plan: list[Call] = []  # slice -> call
    owner: list[tuple[int, str]] = []  # slice -> (round, variant)
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            plan.append(variants[name])
            owner.append((r, name))
    current = [0]  # the slice now; len(plan): stop
    counts = [[0] * len(plan) for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def worker(mine: list[int]) -> None:
        end = len(plan)
        barrier.wait()
        while True:
            s = current[0]
            if s == end:
                return
            plan[s]()
            mine[s] += 1

    pool = [threading.Thread(target=worker, args=(counts[i],)) for i in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    edges = [time.perf_counter()]
    for s in range(len(plan)):
        time.sleep(seconds)  # the slice, not synchronisation
        current[0] = s + 1
        edges.append(time.perf_counter())
    for t in pool:
        t.join()
    per_s: dict[str, list[float]] = {name: [0.0] * rounds for name in names}
    for s, (r, name) in enumerate(owner):
        per_s[name][r] = sum(c[s] for c in counts) / (edges[s + 1] - edges[s])
    # A round where either slice saw no call start (the threads had no core for the
    # whole slice) measures nothing: left out, and counted.
    ratios = {
        name: [a / b for a, b in zip(per_s[name], per_s[base], strict=True) if a and b]
        for name, base in pairs.items()
    }
    return {
        "per_s": {name: round(statistics.median(v)) for name, v in per_s.items()},
        "ratio": {name: round(statistics.median(v), 3) if v else 0.0 for name, v in ratios.items()},
        "round_ratios": {name: [round(x, 3) for x in v] for name, v in ratios.items()},
        "rounds_empty": {name: rounds - len(v) for name, v in ratios.items()},
    }
