"""TensorFlow's default executor against its single-threaded one, in one process, interleaved.

For each example model and batch size, loads the SavedModel once and builds its flat call
both ways (``runtimes/_executor.py``); then runs steps that alternate the executor (d s s
d d s ...: the machine's drift falls on both alike): one thread calling back to back
(``1t``), one thread sleeping ``--gap`` µs before each call (``1t-gap``: a server at
concurrency 1), and two threads making one call each at once per step (``2t``: the
batching executor's two slots). Per cell and executor: the median step's wall µs and
process CPU µs per call; per cell the median of single/default over adjacent steps (below
1: the single-threaded executor is faster). Outputs are checked equal first.

    python bench/tf_executor.py --models .test-cache/examples/models \\
        --model mlp,mobilenet_v2 --batch 1,32 --calls 2000

The server sets ``TF_NUM_INTEROP_THREADS=1`` (``keepwarm.settings``); run with it set to
measure what ``keepwarm serve`` sees, without it for a library caller.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
Call = Callable[[dict[str, np.ndarray]], Any]


def calls(models: Path, family: str) -> tuple[Any, dict[str, Call]]:
    from keepwarm.runtimes._executor import SINGLE_THREADED
    from keepwarm.runtimes.savedmodel import SavedModelRuntime

    options = {"tf_executor": "default"}
    model = SavedModelRuntime().load(models / family / "1", signature=None, options=options)
    assert model.call_path == "flat", model.call_path
    return model, {"default": model._call, "single": model._call.with_executor(SINGLE_THREADED)}


def pairs(
    ways: dict[str, Call], inputs: dict[str, np.ndarray], threads: int, gap: float, n: int
) -> dict[str, list[tuple[float, float]]]:
    """``n`` steps alternating the executors (which goes first alternates too); in each
    step ``threads`` threads make one call each at once. Per executor and step: (wall µs
    of the step, process CPU µs per call)."""
    names = ["default", "single"]
    plan = [names[(j + j // 2) % 2] for j in range(2 * n)]  # d s s d d s s d ...
    go, done = threading.Barrier(threads + 1), threading.Barrier(threads + 1)

    def work() -> None:
        for name in plan:
            go.wait()
            ways[name](inputs)
            done.wait()

    pool = [threading.Thread(target=work) for _ in range(threads if threads > 1 else 0)]
    for t in pool:
        t.start()
    seen: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for name in plan:
        if gap:
            time.sleep(gap)
        cpu, wall = time.process_time(), time.perf_counter()
        if pool:
            go.wait()
            done.wait()
        else:  # one thread: the call on this one, no hand-off
            ways[name](inputs)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        seen[name].append((wall * 1e6, cpu / threads * 1e6))
    for t in pool:
        t.join()
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / ".test-cache/examples/models")
    parser.add_argument("--model", default="mlp,mobilenet_v2")
    parser.add_argument("--batch", default="1,32")
    parser.add_argument("--calls", type=int, default=2000, help="steps per executor (MLP)")
    parser.add_argument("--gap", type=float, default=300.0, help="µs between 1t-gap calls")
    args = parser.parse_args()
    cells: list[tuple[str, int, str, dict[str, Call], dict[str, np.ndarray]]] = []
    keep = []
    for family in args.model.split(","):
        model, ways = calls(args.models, family)
        keep.append(model)
        for batch in map(int, args.batch.split(",")):
            rng = np.random.default_rng(batch)
            shape = {
                s.name: [batch if d is None else d for d in s.shape] for s in model.signature.inputs
            }
            inputs = {n: rng.random(s).astype(np.float32) for n, s in shape.items()}
            a, b = ways["default"](inputs), ways["single"](inputs)
            assert all(np.array_equal(a[k], b[k]) for k in a), f"{family} outputs differ"
            kinds = ["1t", "2t"] + (["1t-gap"] if family == "mlp" and batch == 1 else [])
            cells += [(family, batch, kind, ways, inputs) for kind in kinds]
    inter = os.environ.get("TF_NUM_INTEROP_THREADS", "(TensorFlow's default)")
    print(f"TF_NUM_INTEROP_THREADS={inter}; medians of {args.calls} steps per executor")
    heads = ["default µs", "cpu µs", "single µs", "cpu µs", "wall s/d", "cpu s/d"]
    print(f"{'cell':<24}" + "".join(f"{h:>12}" for h in heads))
    for family, batch, kind, ways, inputs in cells:
        threads = 2 if kind == "2t" else 1
        gap = args.gap / 1e6 if kind == "1t-gap" else 0.0
        n = args.calls if family == "mlp" else max(6, args.calls // (20 if batch == 1 else 400))
        got = pairs(ways, inputs, threads, gap, n)
        d, s = got["default"], got["single"]
        med = [statistics.median(x[i] for x in side) for side in (d, s) for i in range(2)]
        wall = statistics.median(b[0] / a[0] for a, b in zip(d, s, strict=True))
        cpu = statistics.median(b[1] / a[1] for a, b in zip(d, s, strict=True))
        text = "".join(f"{v:>12.0f}" for v in med) + f"{wall:>12.3f}{cpu:>12.3f}"
        print(f"{family + ' b' + str(batch) + ' ' + kind + f' ({n})':<24}{text}", flush=True)


if __name__ == "__main__":
    main()
