"""Overload (issue 9) measured on several builds of ``keepwarm serve`` in turn, so that
the comparison survives a shared machine: MobileNetV2 with ``max_queue = 8``, 64 v2 JSON
clients offering ``--rate`` req/s at a steady pace (``bench/overload.py``), the
builds run one after the other, ``--rounds`` times, in a rotating order.

    python bench/overload_ab.py --tree before=/path/to/main/src --tree now=src

``bench/serve_batching.py``'s overload cell alone (no peers, no other cell): its server
serves the MLP beside MobileNetV2, its load is four times the c=32 throughput for 2 s
(``--quick``) or 10 s: ``--beside mlp --rate 280 --seconds 2``.

Prints per build the medians over the rounds of: the p50 and p99 of the 503s (target:
p99 at most 10 ms), the p99 of the 200s and its bound (max_queue / throughput + one
batch), and the throughput served. Figures taken while other work runs are noisy:
compare builds within one run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from overload import overload
from serve import ROOT, write_bodies

KEYS = (
    "p50_refused_ms",
    "p99_refused_ms",
    "p50_ok_ms",
    "p99_ok_ms",
    "bound_ms",
    "ok_over_bound",
    "bound_mean_ms",
    "batch_ms",
    "table_batch_ms",
    "queue_ms",
    "served_rps",
    "server_cpu_ms",
    "client_cpu_ms",
    "loop_wait_us",
    "client_lag_p50_ms",
    "client_lag_p99_ms",
    "other",
    "alone_before_ms",
    "alone_after_ms",
    "queued_after",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=path/to/src")
    parser.add_argument("--models", type=Path, default=ROOT / "examples" / "models")
    parser.add_argument("--rate", type=float, default=120.0, help="offered req/s")
    parser.add_argument("--model", default="mobilenet_v2", help="mobilenet_v2 or mlp")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--beside", action="append", default=[],
                        help="another model served (idle) beside --model, as in "
                        "bench/serve_batching.py's cell (the MLP); repeatable")  # fmt: skip
    args = parser.parse_args()
    trees = {name: Path(path).resolve() for name, _, path in (t.partition("=") for t in args.tree)}
    found: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        body = write_bodies(work)[args.model][0]
        repo = work / "models"
        for model in (args.model, *args.beside):
            shutil.copytree(args.models / model, repo / model)
        names = list(trees)
        for round_ in range(args.rounds):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                env = {**os.environ, "PYTHONPATH": str(trees[name])}
                result = overload(repo, body, args.seconds, work, args.rate, env, args.model)
                found[name].append(result)
                print(name, {k: round(result[k], 2) for k in KEYS}, flush=True)
                print(name, "503s over 10 ms by quarter second:", result["slow_refusals"])
                print(name, "503s by quarter second:", result["refusals_by_quarter"])
                print(name, "503s' phases (p50, p99 ms):", result["refused_phases_ms"])
    print(f"\n{'build':12s}" + "".join(f"{k:>16s}" for k in KEYS))
    for name, results in found.items():
        medians = [statistics.median(r[k] for r in results) for k in KEYS]
        print(f"{name:12s}" + "".join(f"{m:16.2f}" for m in medians))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
