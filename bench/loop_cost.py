"""The event loop's own CPU per request, with no HTTP server and no client: keepwarm's ASGI
app (``HttpApp`` over a real ``InferenceService``, the example MLP, batching as its
``model.toml`` says) called in-process on uvloop, one request at a time, as uvicorn
would call it. What is measured is the CPU time of the loop's thread (``thread_time``)
per request: the part of a request a change to the loop's Python work moves, without the
sockets' and the scheduler's noise that a shared machine adds to a ``wrk`` run.

Each side is a source tree; each runs in its own process (spawned once), and the sides
take turns, ``--rounds`` times, ``--requests`` requests each turn:

    python bench/loop_cost.py --tree main=/work/main/src --tree mine=src --api v2

``--api``: ``v2`` (JSON), ``v2-binary`` (the binary tensor extension) or ``tfserving``
(``:predict`` rows). Prints per side the median loop µs per request and the median of
the per-round ratios to the first side.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from binary_limit import binary_body
from serve import ROOT, inputs, v2_body

MODEL = "mlp"


def request(api: str, x: np.ndarray) -> tuple[str, list[tuple[bytes, bytes]], bytes]:
    """The path, headers and body of one request of kind ``api``."""
    if api == "tfserving":
        body = orjson.dumps({"instances": x}, option=orjson.OPT_SERIALIZE_NUMPY)
        return f"/v1/models/{MODEL}:predict", [(b"content-type", b"application/json")], body
    if api == "v2-binary":
        body, length = binary_body(x)
        headers = [(b"content-type", b"application/octet-stream"),
                   (b"inference-header-content-length", str(length).encode())]  # fmt: skip
        return f"/v2/models/{MODEL}/infer", headers, body
    return f"/v2/models/{MODEL}/infer", [(b"content-type", b"application/json")], v2_body(x)


async def start_app(repo: Path) -> tuple[Any, Any, Any]:
    """keepwarm's ASGI app over a started service of ``repo``: (app, service, repository)."""
    from keepwarm.http import HttpApp
    from keepwarm.repository import Repository
    from keepwarm.service import InferenceService

    repository = Repository(str(repo))
    service = InferenceService(repository, freeze_heap=True)
    app = HttpApp(service, max_body_bytes=64 << 20, max_json_depth=64)
    await asyncio.to_thread(repository.start)
    await asyncio.to_thread(repository.refresh)  # as the server does: files seen settled
    service.started()
    return app, service, repository


async def call(app: Any, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
    """One request through the ASGI ``app``, as uvicorn would call it: its status."""
    sent: list[dict[str, Any]] = []
    given = False

    async def receive() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays (a watch is cancelled)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path,
             "raw_path": path.encode(), "query_string": b"", "headers": headers,
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}  # fmt: skip
    await app(scope, receive, send)
    if sent[0]["status"] != 200:
        print("ANSWER", sent[0]["status"], sent[1]["body"][:300], file=sys.stderr)
    return int(sent[0]["status"])


async def serve_rounds(repo: Path, api: str, count: int) -> None:
    """The child: build the app, then one line of figures per ``go`` line on stdin."""
    app, service, repository = await start_app(repo)
    requests = [request(api, x) for x in inputs(MODEL, 8)]

    one = partial(call, app)

    async def run(n: int) -> tuple[float, float]:
        times = []
        cpu = time.thread_time()
        for i in range(n):
            start = time.perf_counter()
            status = await one(*requests[i % len(requests)])
            times.append(time.perf_counter() - start)
            if status != 200:
                raise SystemExit(f"status {status}")
        return (time.thread_time() - cpu) / n * 1e6, statistics.median(times) * 1e3

    deadline = time.monotonic() + 300  # the model is found and loaded: 200s from here
    while await one(*requests[0]) != 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await run(200)  # warm
    print("READY", flush=True)
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    while (await reader.readline()).strip() == b"go":
        loop_us, p50 = await run(count)
        print(f"ROUND {loop_us:.3f} {p50:.4f}", flush=True)
    service.close()
    await asyncio.to_thread(repository.close)


def child(args: argparse.Namespace) -> None:
    import uvloop

    from keepwarm.service_process import tune_interpreter

    tune_interpreter()
    uvloop.run(serve_rounds(args.repo, args.api, args.requests))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", default=[], help="NAME=path/to/src")
    parser.add_argument("--models", type=Path, default=ROOT / "examples" / "models")
    parser.add_argument("--api", default="v2", choices=("v2", "v2-binary", "tfserving"))
    parser.add_argument("--batching", default="on", choices=("on", "off"))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repo", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "models"
        shutil.copytree(args.models / MODEL, repo / MODEL)
        if args.batching == "off":
            (repo / MODEL / "model.toml").unlink(missing_ok=True)
        return compare(args, repo)


def compare(args: argparse.Namespace, repo: Path) -> int:
    runs = take_turns(__file__, args, repo)
    report(args, {name: [(r[0], r[1]) for r in rows] for name, rows in runs.items()})
    return 0


def take_turns(
    script: str, args: argparse.Namespace, repo: Path, extra: tuple[str, ...] = ()
) -> dict[str, list[tuple[float, ...]]]:
    """Each side of ``args.tree`` as a child process of ``script`` (``--child``, ``extra``
    arguments); the sides take turns, ``args.rounds`` times, in a rotating order; each
    turn's figures are the numbers of the child's ``ROUND`` line."""
    sides: dict[str, subprocess.Popen[str]] = {}
    runs: dict[str, list[tuple[float, ...]]] = {}
    try:
        for spec in args.tree:
            name, _, src = spec.partition("=")
            env = {**os.environ, "PYTHONPATH": str(Path(src).resolve()),
                   "TF_CPP_MIN_LOG_LEVEL": "2"}  # fmt: skip
            sides[name] = subprocess.Popen(
                [sys.executable, script, "--child", "--repo", str(repo), "--api", args.api,
                 "--requests", str(args.requests), *extra],
                env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
        for proc in sides.values():
            assert proc.stdout is not None
            while (line := proc.stdout.readline()) and not line.startswith("READY"):
                pass
        runs = {name: [] for name in sides}
        names = list(sides)
        for index in range(args.rounds):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                proc = sides[name]
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
                _, *figures = proc.stdout.readline().split()
                runs[name].append(tuple(float(f) for f in figures))
    finally:
        for proc in sides.values():
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=60)
    return runs


def report(args: argparse.Namespace, runs: dict[str, list[tuple[float, float]]]) -> None:
    names = list(runs)
    base = runs[names[0]]
    print(f"\n{MODEL} {args.api}, batching {args.batching}, in-process, one at a time "
          f"({args.rounds} rounds of {args.requests}; ratios to {names[0]!r})")  # fmt: skip
    print(f"{'side':12s}{'loop us/req':>13s}{'loop x':>8s}{'p50 ms':>9s}{'p50 x':>8s}")
    for name in names:
        mine = runs[name]
        loop_x = statistics.median(m[0] / b[0] for m, b in zip(mine, base, strict=True))
        p50_x = statistics.median(m[1] / b[1] for m, b in zip(mine, base, strict=True))
        print(f"{name:12s}{statistics.median(m[0] for m in mine):13.1f}{loop_x:8.3f}"
              f"{statistics.median(m[1] for m in mine):9.3f}{p50_x:8.3f}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
