"""Memory given back: load/predict/unload cycles of the example MobileNetV2, isolation
off (the model in the server's own process) and on (``Settings.workers.isolate``: the
model in a worker process, which ends when the model unloads).

Each way runs in a fresh process of its own (the "server": a ``ModelCache``), so that
neither sees the other's TensorFlow. After every cycle (the unload done and its memory
given back) the sum of PSS over the server's process tree is read from ``smaps_rollup``
(``keepwarm.process_memory``), as is the server process's own ledger of bytes unloading
did not give back. Prints a table, writes JSON with ``--json``.

The target is read on the tree's PSS without the pages of mapped files (``Pss_File``:
the interpreter's and libraries' code, never given back by an unload nor kept by one).
Their share depends on the other processes of the machine that map the same files, not
on the server: in a 10-cycle isolated run beside other jobs the server's ``Pss_File``
moved between 1.4 and 3.2 MB (its RSS, its shared clean pages and its anonymous PSS
unchanged at those moments), 6-11% of its 28 MB, which alone failed the 10% target. The
whole PSS is reported beside it (``PSS growth``).

Target (issue 10): with isolation on, the sum of PSS (file pages left out) after every
cycle from the 2nd on stays within 10% of its value after cycle 2 (the maximum over
cycles 2..N); exits 1 when it does not. The same figure without isolation is reported for
comparison, as is the time a cycle takes each way (isolation pays a process start and a
framework import per load).
``tests/stress/test_worker_memory.py`` runs this with 100 cycles (``make stress``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
WITHIN = 0.10  # isolation on: max PSS over cycles 2..N at most 10% over cycle 2's
WAYS = ("isolated", "in-process")
MODEL = "mobilenet_v2"  # the SavedModel; mobilenet_v2_onnx is the same graph in ONNX
CYCLE_WAIT_S = 120.0
MB = 2**20


@dataclass(frozen=True)
class Run:
    way: str
    cycles: int
    seconds: float
    tree_pss: list[int]  # after each cycle's unload, bytes
    tree_memory: list[int]  # the same without the pages of mapped files (the target's)
    loaded_pss: list[int]  # while the model was loaded (after its predict), bytes
    unreclaimed: int  # the server process's ledger after the last cycle
    baseline: int | None

    @property
    def reference(self) -> int:
        return self.tree_memory[1]  # after cycle 2

    @property
    def peak(self) -> int:
        return max(self.tree_memory[1:])

    @property
    def growth(self) -> float:
        return self.peak / self.reference - 1.0

    @property
    def pss_growth(self) -> float:
        """The same growth of the whole PSS, file pages included."""
        return max(self.tree_pss[1:]) / self.tree_pss[1] - 1.0


def run_cycles(models: Path, way: str, cycles: int, model: str = MODEL) -> Run:
    """In this process: ``cycles`` load/predict/unload cycles of ``model``."""
    import numpy as np

    import keepwarm
    from keepwarm.core.states import State
    from keepwarm.process_memory import UnreclaimedLedger, tree_pss_bytes
    from keepwarm.settings import Settings

    uri = models / model / "1"
    settings = Settings.from_env(workers__isolate=way == "isolated")
    cache = keepwarm.ModelCache(warmup=False, settings=settings)
    ledger = UnreclaimedLedger()
    stop = ledger.watch(cache.manager.events)
    given_back = threading.Event()  # set after the ledger saw the unload (same thread, later)
    stop_too = cache.manager.events.subscribe(
        lambda event: given_back.set() if event.kind == "reclaimed" else None
    )
    key = cache.handle(uri)._key
    x = np.random.default_rng(0).random((1, 224, 224, 3), dtype=np.float32)
    after: list[int] = []
    memory: list[int] = []
    loaded: list[int] = []
    started = time.monotonic()
    for cycle in range(1, cycles + 1):
        cache.load(uri).predict(x)
        loaded.append(tree_pss_bytes())
        given_back.clear()
        if not cache.evict(uri):
            raise RuntimeError(f"cycle {cycle}: nothing to unload")
        if not given_back.wait(CYCLE_WAIT_S) or cache.manager.state(key) is not State.UNLOADED:
            raise RuntimeError(f"cycle {cycle}: not unloaded within {CYCLE_WAIT_S:g} s")
        after.append(tree_pss_bytes())
        memory.append(tree_pss_bytes(files=False))
        if cycle % 10 == 0 or cycle <= 2:
            print(
                f"{way} cycle {cycle}: {time.monotonic() - started:.0f} s, PSS of the "
                f"tree {after[-1] / MB:.1f} MB, without file pages {memory[-1] / MB:.1f} MB "
                f"(loaded {loaded[-1] / MB:.0f} MB)",
                file=sys.stderr,
                flush=True,
            )
    seconds = time.monotonic() - started
    stop()
    stop_too()
    cache.manager.close(5.0)
    return Run(way, cycles, seconds, after, memory, loaded, ledger.total, ledger.baseline_bytes)


def run_way(models: Path, way: str, cycles: int, model: str = MODEL) -> Run:
    """``run_cycles`` in a fresh interpreter (the figures travel back as JSON)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "bench")])}
    out = subprocess.run(
        [sys.executable, __file__, "--child", way, "--models", str(models),
         "--cycles", str(cycles), "--model", model],
        env=env, stdout=subprocess.PIPE, check=True, timeout=cycles * CYCLE_WAIT_S,
    )  # fmt: skip
    return Run(**json.loads(out.stdout))


def table(runs: list[Run]) -> str:
    """The tree's PSS without file pages after cycle 2, its maximum over cycles 2..N,
    after the last cycle and its growth; the growth of the whole PSS (file pages in)."""
    lines = [
        f"{'way':<11} {'cycles':>6} {'s/cycle':>8} {'@2 MB':>7} {'max MB':>7} {'last MB':>7} "
        f"{'growth':>7} {'PSS@2 MB':>9} {'PSS max':>8} {'PSS growth':>10} {'loaded MB':>10} "
        f"{'kept MB':>8}"
    ]
    for r in runs:
        lines.append(
            f"{r.way:<11} {r.cycles:>6} {r.seconds / r.cycles:>8.2f} {r.reference / MB:>7.1f} "
            f"{r.peak / MB:>7.1f} {r.tree_memory[-1] / MB:>7.1f} {r.growth:>7.1%} "
            f"{r.tree_pss[1] / MB:>9.1f} {max(r.tree_pss[1:]) / MB:>8.1f} "
            f"{r.pss_growth:>10.1%} {max(r.loaded_pss) / MB:>10.0f} {r.unreclaimed / MB:>8.0f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / "examples" / "models")
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--model", default=MODEL, help="an example model (default %(default)s)")
    parser.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", choices=WAYS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cycles < 2:
        parser.error("--cycles: at least 2 (the reference is the PSS after cycle 2)")
    if args.child:
        print(json.dumps(asdict(run_cycles(args.models, args.child, args.cycles, args.model))))
        return 0
    from environment import environment

    runs = [run_way(args.models, way, args.cycles, args.model) for way in args.ways]
    print(table(runs))
    results: dict[str, Any] = {
        "environment": environment(args, ["tensorflow", "onnxruntime"]),
        "runs": [{**asdict(r), "growth": r.growth, "pss_growth": r.pss_growth} for r in runs],
        "within": WITHIN,
    }
    missed = [r.way for r in runs if r.way == "isolated" and r.growth > WITHIN]
    results["missed"] = missed
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    for way in missed:
        print(
            f"MISSED: {way}: PSS (file pages left out) grew past {WITHIN:.0%} of its value "
            "after cycle 2"
        )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
