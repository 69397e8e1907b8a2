"""Overload (issue 9) measured on several builds of ``keepwarm serve`` in turn, so that
the comparison survives a shared machine: MobileNetV2 with ``max_queue = 8``, 64 v2 JSON
clients offering ``--rate`` req/s at a steady pace (``bench/overload.py``), the
builds run one after the other, ``--rounds`` times, in a rotating order.

    python bench/overload_ab.py --tree before=/path/to/main/src --tree now=src
    python bench/overload_ab.py --tree off=src --tree idle=src \\
        --env idle:KEEPWARM_SERVER__MODEL_POLICY=idle --rate 40 --beside mlp

(a server setting per build through its ``KEEPWARM_SERVER__...`` variable; the figures
of ``model_nice``, ``model_policy`` and ``model_priority_scope`` measured so are in
``keepwarm.thread_priority``'s docstring).

``bench/serve_batching.py``'s overload cell alone (no peers, no other cell): its server
serves the MLP beside MobileNetV2, its load is four times the c=32 throughput for 2 s
(``--quick``) or 10 s: ``--beside mlp --rate 280 --seconds 2``. The default rate here,
120 req/s, is about 1.5x that throughput on this machine; serve_batching offers 4x
(138-300 req/s, as the c=32 cell measured), and the 503s' p99 grows steeply with it
(session 23, one run: 7.8-10.7 ms at 120 against 26-163 ms at 280, the probe's 2.3-2.9
against 28-120): compare figures at one rate. ``--rate``, ``--pool`` and ``--loop-nice``
may each be given several times: every build is run at each combination, in the
rotation. (At 280 req/s, the server's event loop at nice -10 cut the probe's 503 p99
from 90-119 to 17-43 ms and its wait for a core per wake-up from 418-451 to 81-116 us,
but not the load client's p99, and served 0.78x the requests: the loop's share of the
cores is most of the server's part, the GIL little.)

Prints per build the medians over the rounds of: the p50 and p99 of the 503s (target:
p99 at most 10 ms), the p99 of the 200s and its bound (max_queue / throughput + one
batch), and the throughput served. Figures taken while other work runs are noisy:
compare builds within one run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from ab import side_environment
from overload import overload
from serve import ROOT, write_bodies

KEYS = (
    "p50_refused_ms",
    "p99_refused_ms",
    "p99_refused_after_sent_ms",
    "probe_p50_refused_ms",
    "probe_p99_refused_ms",
    "probe_refused",
    "server_refusal_p50_ms",
    "server_refusal_p99_ms",
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
    parser.add_argument("--rate", type=float, action="append",
                        help="offered req/s (default 120); repeatable: each build at each "
                        "rate, in the rotation")  # fmt: skip
    parser.add_argument("--pool", type=int, action="append",
                        help="the client's connection pool (default 64, the clients; 0: no "
                        "limit); repeatable as --rate")  # fmt: skip
    parser.add_argument("--loop-nice", type=int, action="append",
                        help="the server's event loop thread's nice value during the load "
                        "(default 0: as started); repeatable as --rate")  # fmt: skip
    parser.add_argument("--env", action="append", default=[],
                        help="NAME:VAR=VALUE, an environment variable for one build (a "
                        "--tree NAME); repeatable")  # fmt: skip
    parser.add_argument("--model", default="mobilenet_v2", help="mobilenet_v2 or mlp")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--beside", action="append", default=[],
                        help="another model served (idle) beside --model, as in "
                        "bench/serve_batching.py's cell (the MLP); repeatable")  # fmt: skip
    args = parser.parse_args()
    trees = {name: Path(path).resolve() for name, _, path in (t.partition("=") for t in args.tree)}
    for item in args.env:
        name, _, assignment = item.partition(":")
        var, eq, _ = assignment.partition("=")
        if name not in trees or not var or not eq:
            parser.error(f"--env {item!r}: expected NAME:VAR=VALUE with NAME a --tree")
    varied = args.rate or args.pool or args.loop_nice
    cells = {
        f"{name}@{rate:g}/p{pool}/n{nice}" if varied else name: (name, tree, rate, pool, nice)
        for name, tree in trees.items()
        for rate in args.rate or [120.0]
        for pool in args.pool or [64]
        for nice in args.loop_nice or [0]
    }
    found: dict[str, list[dict[str, Any]]] = {name: [] for name in cells}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        body = write_bodies(work)[args.model][0]
        repo = work / "models"
        for model in (args.model, *args.beside):
            shutil.copytree(args.models / model, repo / model)
        names = list(cells)
        for round_ in range(args.rounds):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                build, tree, rate, pool, nice = cells[name]
                env = side_environment(build, tree, args.env)
                result = overload(repo, body, args.seconds, work, rate, env, args.model, pool, nice)
                found[name].append(result)
                print(name, {k: round(result[k], 2) for k in KEYS}, flush=True)
                print(name, "503s over 10 ms by quarter second:", result["slow_refusals"])
                print(name, "503s by quarter second:", result["refusals_by_quarter"])
                print(name, "503s' phases (p50, p99 ms):", result["refused_phases_ms"])
    print(f"\n{'build':20s}" + "".join(f"{k:>16s}" for k in KEYS))
    for name, results in found.items():
        medians = [statistics.median(r[k] for r in results) for k in KEYS]
        print(f"{name:20s}" + "".join(f"{m:16.2f}" for m in medians))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
