"""The event loop's CPU per request at many clients at once, with no HTTP server and no
sockets: keepwarm's ASGI app (``HttpApp`` over a real ``InferenceService``, the example
MLP, batching as its ``model.toml`` says) called in-process on uvloop by ``--c``
coroutines, each sending its next request once answered, as ``wrk -c`` clients do. At
32 the requests queue and are batched (``batching.serving.submit``, the batch threads,
``finish``), the path ``bench/loop_cost.py`` (one request at a time) does not take.

What is measured per round: the loop thread's CPU µs per request (``thread_time``), the
whole process's (batch threads included), and requests per second; without the
kernel's socket work and the client's, the figures move less with the machine's load
than a ``wrk`` run's (``bench/ab.py``), so a change of a few per cent to the batching
path's loop work shows. Each side is a source tree, in its own process; the sides take
turns, ``--rounds`` times:

    python bench/loop_cost_many.py --tree main=/path/to/main/src --tree now=src --c 32

Prints per side the medians, and the medians of the per-round ratios to the first side.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from loop_cost import MODEL, call, request, start_app, take_turns
from serve import ROOT, inputs


async def serve_rounds(repo: Path, api: str, count: int, clients: int) -> None:
    """The child: build the app, then one line of figures per ``go`` line on stdin."""
    app, service, repository = await start_app(repo)
    requests = [request(api, x) for x in inputs(MODEL, 8)]
    one = partial(call, app)

    async def client(n: int, first: int) -> None:
        for i in range(n):
            status = await one(*requests[(first + i) % len(requests)])
            if status != 200:
                raise SystemExit(f"status {status}")

    async def run(n: int) -> tuple[float, float, float]:
        each = max(1, n // clients)
        loop_cpu, process_cpu, wall = time.thread_time(), time.process_time(), time.perf_counter()
        await asyncio.gather(*(client(each, k) for k in range(clients)))
        done = each * clients
        return ((time.thread_time() - loop_cpu) / done * 1e6,
                (time.process_time() - process_cpu) / done * 1e6,
                done / (time.perf_counter() - wall))  # fmt: skip

    deadline = time.monotonic() + 300
    while await one(*requests[0]) != 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await run(2000)  # warm: buckets, threads, the latency table
    print("READY", flush=True)
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    while (await reader.readline()).strip() == b"go":
        loop_us, process_us, rps = await run(count)
        print(f"ROUND {loop_us:.3f} {process_us:.3f} {rps:.1f}", flush=True)
    service.close()
    await asyncio.to_thread(repository.close)


def child(args: argparse.Namespace) -> None:
    import uvloop

    from keepwarm.service_process import tune_interpreter

    tune_interpreter()
    uvloop.run(serve_rounds(args.repo, args.api, args.requests, args.c))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", default=[], help="NAME=path/to/src")
    parser.add_argument("--models", type=Path, default=ROOT / "examples" / "models")
    parser.add_argument("--api", default="v2", choices=("v2", "v2-binary", "tfserving"))
    parser.add_argument("--c", type=int, default=32, help="clients at once")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--requests", type=int, default=6400, help="per round")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repo", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    if len(args.tree) < 2:
        raise SystemExit("give at least two sides (--tree NAME=SRC)")
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        shutil.copytree(args.models / MODEL, repo / MODEL)
        return compare(args, repo)


def compare(args: argparse.Namespace, repo: Path) -> int:
    report(args, take_turns(__file__, args, repo, ("--c", str(args.c))))
    return 0


def report(args: argparse.Namespace, runs: dict[str, list[tuple[float, ...]]]) -> None:
    names = list(runs)
    base = runs[names[0]]
    print(f"\n{MODEL} {args.api} c={args.c}, in-process (medians over {args.rounds} rounds; "
          f"ratios to {names[0]!r})")  # fmt: skip
    print(f"{'side':12s}{'loop us':>9s}{'proc us':>9s}{'req/s':>9s}{'loop x':>8s}{'proc x':>8s}"
          f"{'req/s x':>9s}")  # fmt: skip
    for name in names:
        mine = runs[name]
        medians = [statistics.median(r[i] for r in mine) for i in range(3)]
        ratios = [
            statistics.median(m[i] / b[i] for m, b in zip(mine, base, strict=True))
            for i in range(3)
        ]
        print(f"{name:12s}{medians[0]:9.1f}{medians[1]:9.1f}{medians[2]:9.0f}"
              f"{ratios[0]:8.3f}{ratios[1]:8.3f}{ratios[2]:9.3f}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
