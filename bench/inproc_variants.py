"""Where the in-process cell's on-path extra goes: ``bench/inproc_pairs.measure`` over the
MLP loaded as off (batching=False) and as on several times, each on-load's
``predict`` replaced by a variant of ``Loose.predict`` (its own batcher's), all in one
process, 10 ms alternated phases; per side and thread count the median per-round
req/s ratio to off, process CPU µs and context switches a call.

Variants: ``on`` (the batcher's own ``predict``), ``bare`` (a frame of the same signature
around the runtime's ``predict``: the floor), ``gate`` (the crowd gate and the queue's
check around it), ``rows`` (the gate and the rows), ``timed`` (those and the clock reads
and the append, the list cleared instead of folded), ``lean`` (``timed`` with the rows
by ``len`` and the seconds appended to their bucket's list: no tuple, no shape),
``folded`` (``lean`` folding into the batcher's counters at 256 runs, as
``Loose.predict`` does; needs ``Loose._at``). Each variant is written out whole, not built
from the one before: a shared helper would add a call a request, the cost being measured.
Session 30's figures: see the docstring of ``keepwarm.batching.loose`` (rounds move
+-5-10%: only the sum of the pieces stands out).

    python bench/inproc_variants.py --threads 4,8 --rounds 8 --sides off,on,bare,timed
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from time import perf_counter
from typing import Any

from batching_ab import bare_copy
from inproc_pairs import measure
from serve import MODELS, ROOT, inputs


def variants(loose: Any) -> dict[str, Callable[..., Any]]:
    """The variants' ``predict`` over ``loose`` (a ``Loose``)."""
    run = loose._predict
    runs, callers, queue = loose.runs, loose.callers, loose._queue
    sizes = frozenset(getattr(loose, "sizes", None) or loose._at)  # the buckets

    def bare(inputs: Any, *, timeout: float | None = None, slow: Any = None) -> Any:
        return run(inputs)

    def gate(inputs: Any, *, timeout: float | None = None, slow: Any = None) -> Any:
        runs.append(None)
        if len(runs) + len(callers) > loose.crowd or queue.items:
            runs.pop()
            raise RuntimeError("past the crowd")
        try:
            return run(inputs)
        finally:
            runs.pop()
            if queue.items:
                raise RuntimeError("queued")

    def rows(inputs: Any, *, timeout: float | None = None, slow: Any = None) -> Any:
        runs.append(None)
        if len(runs) + len(callers) > loose.crowd or queue.items:
            runs.pop()
            raise RuntimeError("past the crowd")
        try:
            (array,) = inputs.values()
            shape = array.shape
            if (shape[0] if shape else 0) not in sizes:
                raise RuntimeError("not at a bucket")
            return run(inputs)
        finally:
            runs.pop()
            if queue.items:
                raise RuntimeError("queued")

    kept: list[tuple[int, float]] = []

    def timed(inputs: Any, *, timeout: float | None = None, slow: Any = None) -> Any:
        runs.append(None)
        if len(runs) + len(callers) > loose.crowd or queue.items:
            runs.pop()
            raise RuntimeError("past the crowd")
        try:
            (array,) = inputs.values()
            shape = array.shape
            n = shape[0] if shape else 0
            if n not in sizes:
                raise RuntimeError("not at a bucket")
            began = perf_counter()
            outputs = run(inputs)
            kept.append((n, perf_counter() - began))
            if len(kept) >= 256:
                kept.clear()
            return outputs
        finally:
            runs.pop()
            if queue.items:
                raise RuntimeError("queued")

    at: dict[int, list[float]] = {size: [] for size in sizes}  # per bucket

    def lean(inputs: Any, *, timeout: float | None = None, slow: Any = None) -> Any:
        runs.append(None)
        if len(runs) + len(callers) > loose.crowd or queue.items:
            runs.pop()
            raise RuntimeError("past the crowd")
        try:
            (array,) = inputs.values()
            seconds = at.get(len(array))
            if seconds is None:
                raise RuntimeError("not at a bucket")
            began = perf_counter()
            outputs = run(inputs)
            seconds.append(perf_counter() - began)
            if len(seconds) >= 256:
                seconds.clear()
            return outputs
        finally:
            runs.pop()
            if queue.items:
                raise RuntimeError("queued")

    def folded(inputs: Any, *, timeout: float | None = None, slow: Any = None) -> Any:
        runs.append(None)
        if len(runs) + len(callers) > loose.crowd or queue.items:
            runs.pop()
            raise RuntimeError("past the crowd")
        try:
            (array,) = inputs.values()
            seconds = loose._at.get(len(array))
            if seconds is None:
                raise RuntimeError("not at a bucket")
            began = perf_counter()
            outputs = run(inputs)
            seconds.append(perf_counter() - began)
            if len(seconds) >= 256:
                loose._fold()
            return outputs
        finally:
            runs.pop()
            if queue.items:
                raise RuntimeError("queued")

    return {"bare": bare, "gate": gate, "rows": rows, "timed": timed, "lean": lean,
            "folded": folded}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / ".test-cache/examples/models")
    parser.add_argument("--model", default="mlp", choices=MODELS)
    parser.add_argument("--threads", default="4,8")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=1.0, help="per side a round")
    parser.add_argument("--sides", default="off,on,bare,gate,rows,timed")
    args = parser.parse_args()
    import keepwarm

    names = args.sides.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = bare_copy(args.models / args.model, Path(tmp))
        x = inputs(args.model, 1)[0]
        caches = {n: keepwarm.ModelCache() for n in names}
        try:
            models = {n: keepwarm.load(str(model_dir), batching=not n.startswith("off"),
                                       cache=caches[n]) for n in names}  # fmt: skip
            for n, m in models.items():
                m.predict(x)
                if n.startswith("off") or n == "on":
                    continue
                lease = m.acquire()
                batched = lease.model.raw
                batched.predict = variants(batched.batcher._loose)[n]
                lease.release()

            def call_of(model: Any) -> Callable[[], Any]:
                return lambda: model.predict(x)

            predicts = {n: call_of(m) for n, m in models.items()}
            for call in predicts.values():
                for _ in range(50):
                    call()
            for threads in (int(t) for t in args.threads.split(",")):
                measure(predicts, threads, 0.2, 1)
                runs = measure(predicts, threads, args.seconds, args.rounds)
                for n in names:
                    ratios = [r[n]["rps"] / r["off"]["rps"] for r in runs]
                    print(f"{threads} threads {n:6s} /off {statistics.median(ratios):.3f} "
                          f"cpu {statistics.median(r[n]['cpu_us'] for r in runs):6.1f} us "
                          f"switches {statistics.median(r[n]['switches'] for r in runs):.2f} "
                          f"rounds {[round(v, 3) for v in ratios]}", flush=True)  # fmt: skip
        finally:
            for cache in caches.values():
                cache.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
