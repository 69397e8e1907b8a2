"""CPU per call of a runtime's two ways of calling TensorFlow, in one process, interleaved.

For each example model and batch size, loads the model once and times, in alternating
rounds, its ordinary call (``call_ordinary``: the signature bound with keyword arguments)
and its ``predict`` (the flat call when ``call_path`` is ``flat``), on the same coerced
inputs. Per call: process CPU µs (every thread, TensorFlow's own included), the calling
thread's CPU µs (the Python side), and the wall µs; per round the flat/ordinary ratio of
process CPU, reported as the median over rounds. Outputs are checked equal first.

    python bench/call_path.py --models .test-cache/examples/models \\
        --model mlp,mobilenet_v2 --batch 1,32 --runtime savedmodel,keras
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
_SUFFIX = {"savedmodel": "", "keras": "_keras"}


def load(models: Path, family: str, runtime: str) -> Any:
    from keepwarm.runtimes.keras import KerasRuntime
    from keepwarm.runtimes.savedmodel import SavedModelRuntime

    loader = SavedModelRuntime() if runtime == "savedmodel" else KerasRuntime()
    return loader.load(models / f"{family}{_SUFFIX[runtime]}" / "1", signature=None, options={})


def sample(model: Any, batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {}
    for spec in model.signature.inputs:
        shape = [batch if d is None else d for d in spec.shape]
        arrays[spec.name] = rng.random(shape).astype(spec.dtype)
    checked: dict[str, np.ndarray] = model.signature.coerce(arrays)
    return checked


def timed(call: Callable[[Any], Any], inputs: Any, seconds: float) -> tuple[float, float, float]:
    """(process CPU, thread CPU, wall) µs per call over about ``seconds``."""
    for _ in range(3):
        call(inputs)
    calls, wall0 = 0, time.perf_counter()
    cpu0, thread0 = time.process_time(), time.thread_time()
    while calls < 200_000:
        call(inputs)
        calls += 1
        if time.perf_counter() - wall0 >= seconds:
            break
    wall = time.perf_counter() - wall0
    cpu, thread = time.process_time() - cpu0, time.thread_time() - thread0
    return cpu / calls * 1e6, thread / calls * 1e6, wall / calls * 1e6


def compare(model: Any, batch: int, rounds: int, seconds: float) -> dict[str, Any]:
    inputs = sample(model, batch)
    sides = {"ordinary": model.call_ordinary, "flat": model.predict}
    reference = sides["ordinary"](inputs)
    for name, value in sides["flat"](inputs).items():
        if not np.array_equal(value, reference[name]):
            raise SystemExit(f"output {name!r} differs between the two calls")
    runs: dict[str, list[tuple[float, float, float]]] = {side: [] for side in sides}
    for i in range(rounds):
        order = list(sides) if i % 2 == 0 else list(reversed(sides))
        for side in order:
            runs[side].append(timed(sides[side], inputs, seconds))
    ratios = [f[0] / o[0] for f, o in zip(runs["flat"], runs["ordinary"], strict=True)]
    result: dict[str, Any] = {"call_path": model.call_path, "ratio": statistics.median(ratios)}
    for side, values in runs.items():
        result[side] = [statistics.median(v[k] for v in values) for k in range(3)]
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / ".test-cache/examples/models")
    parser.add_argument("--model", default="mlp,mobilenet_v2")
    parser.add_argument("--batch", default="1,32")
    parser.add_argument("--runtime", default="savedmodel")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args(argv)
    rows = []
    print(
        f"{'runtime':10} {'model':13} {'batch':>5}  {'ordinary cpu/thread/wall µs':>28}"
        f"  {'flat cpu/thread/wall µs':>24}  {'flat/ord cpu':>12}"
    )
    for runtime in args.runtime.split(","):
        for family in args.model.split(","):
            model = load(args.models, family, runtime)
            for batch in (int(b) for b in args.batch.split(",")):
                r = compare(model, batch, args.rounds, args.seconds)
                rows.append({"runtime": runtime, "model": family, "batch": batch, **r})
                o, f = r["ordinary"], r["flat"]
                print(
                    f"{runtime:10} {family:13} {batch:>5}  {o[0]:9.0f} {o[1]:8.0f} {o[2]:9.0f}"
                    f"  {f[0]:8.0f} {f[1]:7.0f} {f[2]:8.0f}  {r['ratio']:11.3f}x"
                    + ("" if r["call_path"] == "flat" else f"  ({r['call_path']})"),
                    flush=True,
                )
            model.close()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    main()
