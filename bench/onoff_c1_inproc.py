"""Issue 9's c=1 cell without HTTP: a server's worker-thread step (``batching.serving.begin``,
what ``Record.run`` calls between decoding and encoding) in ONE process on four sides:
``on`` (the model with its ``[batching]`` table), ``same`` (that very load's runtime model
leased without its batcher: the same weights in the same memory), ``off`` and ``off2``
(two more loads without the table: the control), called from one thread, the sides
taking turns call by call (each cycle the four in a random order), the same inputs
rotated among ``--inputs`` arrays.

Per call: its wall time (``perf_counter`` around ``begin``) and the model's own call inside
it (the runtime's ``predict``, timed by a wrapper put in the same place on every side),
so that what batching adds outside the model (``wall - model``) is seen apart from the
model's own scatter, and the process's CPU time over the call. Per cycle the differences
on - same (batching's path alone), on - off, same - off and off2 - off (two loads);
printed: their median with its bootstrap standard error (resampling the cycles), and the
mean of the differences trimmed 10% each end. First run (session 29, MobileNetV2, 1000
cycles, load ~2): on - same outside +0.0152 +- 0.0004 ms, the call +0.014 +- 0.157;
off2 - off the call +0.38 +- 0.12 (``batching.serving``'s docstring).

    python bench/onoff_c1_inproc.py --models .test-cache/examples/models \\
        --model mobilenet_v2 --cycles 3000 [--pause-ms 0.5]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

SHAPES = {"mobilenet_v2": (224, 224, 3), "mlp": (784,)}


def timed(predict: Callable[[Any], Any], out: list[float]) -> Callable[[Any], Any]:
    """``predict``, its call's wall time appended to ``out``."""
    clock = time.perf_counter

    def call(inputs: Any) -> Any:
        began = clock()
        try:
            return predict(inputs)
        finally:
            out.append(clock() - began)

    return call


class Side:
    """One load of the model, leased for the run, its runtime's ``predict`` timed; with
    ``bare``, that side's own runtime model instead, leased without its batcher (batching
    off on the very load ``bare`` batches: the same weights in the same memory)."""

    def __init__(self, directory: Path, batching: bool | None, bare: Side | None = None) -> None:
        import keepwarm
        from keepwarm.model import LeasedModel

        if bare is None:
            cache = keepwarm.ModelCache()
            self.model = keepwarm.load(str(directory), batching=batching, cache=cache)
            self.leased = self.model.acquire().model
        else:
            inner = bare.leased.raw.inner
            self.leased = LeasedModel(inner, bare.leased.name, bare.leased.version)
        self._time()

    def _time(self) -> None:
        from keepwarm.batching.model import BatchedModel

        self.inner: list[float] = []
        raw = self.leased.raw
        if isinstance(raw, BatchedModel):
            raw.wait_warm(120)
            batcher = raw.batcher
            batcher._loose._predict = timed(batcher._loose._predict, self.inner)
            batcher._dispatch._runner.predict = timed(batcher._dispatch._runner.predict, self.inner)
        else:
            self.leased._predict = timed(self.leased._predict, self.inner)
        self.name = self.leased.signature.inputs[0].name

    def call(self, x: np.ndarray) -> tuple[float, float]:
        """One request's step: its wall time and the process's CPU time over it."""
        from keepwarm.batching.serving import begin

        inputs = {self.name: x}
        deadline = time.monotonic() + 60.0
        cpu = time.process_time()
        began = time.perf_counter()
        with ExitStack() as stack:
            begin(self.leased, inputs, deadline, stack)
        return time.perf_counter() - began, time.process_time() - cpu


def run(sides: dict[str, Side], xs: list[np.ndarray], cycles: int, pause: float) -> dict[str, Any]:
    """``cycles`` cycles on this thread; per side its calls' wall and model times."""
    walls: dict[str, list[float]] = {s: [] for s in sides}
    cpus: dict[str, list[float]] = {s: [] for s in sides}
    order = list(sides)
    shuffle = random.Random(1).shuffle
    for k in range(cycles):
        shuffle(order)
        x = xs[k % len(xs)]
        for side in order:
            if pause:
                time.sleep(pause)
            wall, cpu = sides[side].call(x)
            walls[side].append(wall)
            cpus[side].append(cpu)
    return {s: {"wall": walls[s], "model": sides[s].inner[-cycles:], "cpu": cpus[s]} for s in sides}


def trimmed(values: list[float], cut: float = 0.1) -> float:
    ordered = sorted(values)
    k = int(len(ordered) * cut)
    return statistics.fmean(ordered[k : len(ordered) - k])


def boot_se(values: list[float], stat: Callable[[list[float]], float], n: int = 400) -> float:
    rng = random.Random(7)
    size = len(values)
    found = [stat([values[rng.randrange(size)] for _ in range(size)]) for _ in range(n)]
    return statistics.stdev(found)


KEYS = ("wall", "model", "outside", "cpu")


def report(found: dict[str, Any], a: str, b: str, keys: tuple[str, ...] = KEYS) -> None:
    """Per key of ``keys`` (a series per side in ``found``; ``outside``: wall - model),
    ``a``'s against ``b``'s, call by call in order."""
    for key in keys:

        def series(side: str, key: str = key) -> list[float]:
            got = found[side]
            if key == "outside":
                return [w - m for w, m in zip(got["wall"], got["model"], strict=True)]
            return list(got[key])

        x, y = series(a), series(b)
        diffs = [(p - q) * 1e3 for p, q in zip(x, y, strict=True)]
        med = statistics.median(diffs)
        print(
            f"  {a}-{b} {key:8s} median {med:+.4f} ms +- {boot_se(diffs, statistics.median):.4f}"
            f"  trimmed mean {trimmed(diffs):+.4f} +- {boot_se(diffs, trimmed):.4f}"
            f"  (medians {statistics.median(x) * 1e3:.3f} vs {statistics.median(y) * 1e3:.3f})"
        )


def arguments(doc: str) -> argparse.ArgumentParser:
    """The options both c=1 benches take."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--model", default="mobilenet_v2", choices=sorted(SHAPES))
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--inputs", type=int, default=8)
    return parser


def images(model: str, count: int) -> list[np.ndarray]:
    """``count`` single-row inputs for ``model`` (FP32, seeded)."""
    rng = np.random.default_rng(0)
    return [rng.random((1, *SHAPES[model]), dtype=np.float32) for _ in range(count)]


def main() -> int:
    parser = arguments(__doc__ or "")
    parser.add_argument("--pause-ms", type=float, default=0.0)
    args = parser.parse_args()
    xs = images(args.model, args.inputs)
    with tempfile.TemporaryDirectory(prefix="onoff-c1-") as tmp:
        off_dir = Path(tmp) / args.model
        shutil.copytree(args.models / args.model, off_dir)
        (off_dir / "model.toml").unlink(missing_ok=True)
        on = Side(args.models / args.model, None)
        sides = {
            "on": on,
            "same": Side(off_dir, False, bare=on),
            "off": Side(off_dir, False),
            "off2": Side(off_dir, False),
        }
        result: dict[str, Any] = {}

        def work() -> None:
            run(sides, xs, 20, 0.0)  # warm, unmeasured
            for side in sides.values():
                side.inner.clear()
            result.update(run(sides, xs, args.cycles, args.pause_ms / 1e3))

        thread = threading.Thread(target=work, name="worker")  # as a server's worker
        thread.start()
        thread.join()
    print(f"{args.model}: {args.cycles} cycles, pause {args.pause_ms} ms, load {os.getloadavg()}")
    for a, b in (("on", "same"), ("on", "off"), ("same", "off"), ("off2", "off")):
        report(result, a, b)
    return 0


if __name__ == "__main__":
    sys.exit(main())
