"""Issue 9's in-process cell (``keepwarm.load`` with batching on against off, N threads
calling ``predict``) measured with its sides alternating within milliseconds, and a control.

What it replaces: ``batching_ab.in_process`` runs each side for whole seconds, alternated
round by round; at 8 threads it missed 0.97x in 3 runs of 3 (0.75, 0.95, 0.81x) and at 4
once, with per-round ratios 0.3-2.5x, while at 4 and 8 threads no batch forms in-process
(each call runs alone: on is off plus ~1.4 µs of Python a call) and two copies of the
model both off measured 0.81x and 1.05x of each other (``bench/inproc_ab.py``): this
machine's speed moves 10-30% within seconds, and whole-second sides carry it.

So, as ``bench/onoff_cells.py`` does through the server: ONE process holds three loads of
the model, ``on`` (batching=True), ``off`` and ``off2`` (batching=False; the control, the
same as off), each in its own ``keepwarm.ModelCache`` (one cache would give off and off2
the same model). N threads call in phases of ``phase_ms``: during a phase every thread
calls one side until the phase's deadline, all meet at a barrier, then all move to the next
side in ``paired_load.pair_order`` (each side follows each side equally often), whole
cycles only. A side's calls/s is its calls over its phases' summed wall time (each from
the barrier's release to the last thread's return: the switch's cost falls on every side
alike); p50/p99 over its calls; process CPU µs and context switches a call over its phases.
The cell's figure is the median of the per-round ratios on/off, the control's off2/off
beside it (``onoff_cells.summary``); no round is dropped.

    python bench/inproc_pairs.py --threads 1,4,8,32
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batching_ab import _switches, bare_copy
from onoff_cells import SIDES, summary
from paired_load import figures, pair_order, side_for
from serve import MODELS, ROOT, inputs

PHASE_MS = 10.0


def phase_count(seconds: float, phase_ms: float, sides: int) -> int:
    """Phases in a round giving each side ``seconds`` (about), in whole cycles of
    ``pair_order`` (at least one)."""
    cycle = len(pair_order(sides))
    wanted = seconds * sides * 1e3 / phase_ms
    return cycle * max(1, math.ceil(wanted / cycle - 1e-9))


def side_figures(calls: list[float], seconds: float, cpu: float, switches: int) -> dict[str, float]:
    """One side's round: ``paired_load.figures`` of its calls' times (s) over its phases'
    ``seconds``, with process CPU µs and context switches a call."""
    found = figures(calls, seconds, 0)
    n = max(1, len(calls))
    return found | {"seconds": seconds, "cpu_us": cpu * 1e6 / n, "switches": switches / n}


def measure(
    predicts: dict[str, Callable[[], Any]], threads: int, seconds: float, rounds: int,
    phase_ms: float = PHASE_MS,
) -> list[dict[str, dict[str, float]]]:  # fmt: skip
    """``rounds`` rounds of ``threads`` threads calling the sides of ``predicts`` (name ->
    a call) in phases (module docstring): per round, per side, ``side_figures``."""
    names = list(predicts)
    phases = phase_count(seconds, phase_ms, len(names))
    start, end = threading.Barrier(threads + 1), threading.Barrier(threads + 1)
    turn: dict[str, Any] = {"side": names[0], "deadline": 0.0, "stop": False}
    times: list[dict[str, list[float]]] = [{n: [] for n in names} for _ in range(threads)]
    errors: list[BaseException] = []

    def worker(mine: dict[str, list[float]]) -> None:
        clock = time.perf_counter
        while True:
            start.wait()
            if turn["stop"]:
                return
            call, deadline, out = predicts[turn["side"]], turn["deadline"], mine[turn["side"]]
            try:
                while (began := clock()) < deadline:
                    call()
                    out.append(clock() - began)
            except BaseException as error:  # a failed call ends the run, reported below
                errors.append(error)
                turn["deadline"] = 0.0
            end.wait()

    pool = [threading.Thread(target=worker, args=(t,), daemon=True) for t in times]
    for t in pool:
        t.start()
    runs = []
    try:
        for _ in range(rounds):
            for mine in times:
                for out in mine.values():
                    out.clear()
            spent = dict.fromkeys(names, 0.0)
            cpu = dict.fromkeys(names, 0.0)
            switched = dict.fromkeys(names, 0)
            for index in range(phases):
                side = names[side_for(index, len(names))]
                turn["side"] = side
                c0, s0, began = time.process_time(), _switches(), time.perf_counter()
                turn["deadline"] = began + phase_ms / 1e3
                start.wait()
                end.wait()
                spent[side] += time.perf_counter() - began
                cpu[side] += time.process_time() - c0
                switched[side] += _switches() - s0
                if errors:
                    raise RuntimeError("a predict call failed") from errors[0]
            runs.append({
                n: side_figures([x for t in times for x in t[n]], spent[n], cpu[n], switched[n])
                for n in names
            })  # fmt: skip
    finally:
        turn["stop"] = True
        start.wait()
        for t in pool:
            t.join()
    return runs


def cell(runs: list[dict[str, dict[str, float]]], threads: int) -> dict[str, Any]:
    """One thread count's row: ``batching_ab.in_process``'s keys (on/off medians, the
    median of per-round ratios and p50 differences), and the control's (off2)."""
    found = summary(runs)

    def med(side: str, key: str) -> float:
        return statistics.median(r[side][key] for r in runs)

    controls = [r["off2"]["rps"] / r["off"]["rps"] for r in runs]
    return {"threads": threads, "off": found["off"]["rps"], "on": found["on"]["rps"],
            "off2": found["off2"]["rps"], "ratio": found["ratio"], "ratios": found["ratios"],
            "control_ratio": found["control_ratio"],
            "control_ratios": [round(x, 3) for x in controls],
            "p50_off_ms": found["off"]["p50_ms"], "p50_on_ms": found["on"]["p50_ms"],
            "p50_off2_ms": found["off2"]["p50_ms"], "p50_diff_ms": found["p50_diff_ms"],
            "control_p50_diff_ms": found["control_p50_diff_ms"],
            **{f"{key}_{side}": med(side, key) for key in ("cpu_us", "switches")
               for side in SIDES}}  # fmt: skip


def in_process(
    model_dir: Path, x: Any, threads: tuple[int, ...], seconds: float, rounds: int,
    phase_ms: float = PHASE_MS,
) -> list[dict[str, Any]]:  # fmt: skip
    """Per thread count, ``cell`` of ``rounds`` rounds of ``measure`` over the model in
    ``model_dir`` loaded three times (on, off, off2), ``seconds`` per side a round."""
    import keepwarm

    caches = {side: keepwarm.ModelCache() for side in SIDES}
    try:
        models = {side: keepwarm.load(str(model_dir), batching=side == "on", cache=cache)
                  for side, cache in caches.items()}  # fmt: skip

        def call_of(model: Any) -> Callable[[], Any]:
            return lambda: model.predict(x)

        predicts = {side: call_of(m) for side, m in models.items()}
        for call in predicts.values():
            for _ in range(50):
                call()
        cells = []
        for n in threads:
            measure(predicts, n, min(seconds, 0.2), 1, phase_ms)  # unmeasured: threads start
            cells.append(cell(measure(predicts, n, seconds, rounds, phase_ms), n))
        return cells
    finally:
        for cache in caches.values():
            cache.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / ".test-cache/examples/models")
    parser.add_argument("--model", default="mlp", choices=MODELS)
    parser.add_argument("--threads", default="1,4,8,32", help="thread counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=1.0, help="per side a round")
    parser.add_argument("--phase-ms", type=float, default=PHASE_MS)
    args = parser.parse_args()
    threads = tuple(int(n) for n in args.threads.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = bare_copy(args.models / args.model, Path(tmp))
        x = inputs(args.model, 1)[0]
        cells = in_process(model_dir, x, threads, args.seconds, args.rounds, args.phase_ms)
    for c in cells:
        print(line(c, args.model))
    return 0


def line(c: dict[str, Any], model: str = "mlp") -> str:
    """A cell as ``serve_batching.py`` prints it."""
    return (f"in-process {model} {c['threads']:2d} threads: off {c['off']:8.0f}/s on "
            f"{c['on']:8.0f}/s ratio {c['ratio']:.2f}; control off2/off "
            f"{c['control_ratio']:.2f}; p50 {c['p50_diff_ms']:+.4f} ms (control "
            f"{c['control_p50_diff_ms']:+.4f}); CPU us/call off {c['cpu_us_off']:.0f} on "
            f"{c['cpu_us_on']:.0f} off2 {c['cpu_us_off2']:.0f}; rounds {c['ratios']}, "
            f"control {c['control_ratios']}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
