"""Builds of ``keepwarm serve`` against each other over gRPC and REST at once, for issue 8's
MLP c=1 target (gRPC p50 at most REST binary's), measured so that the comparison survives a
shared machine whose speed drifts within minutes.

Sides are given as in ``bench/ab.py`` (``--tree NAME=PATH/src``, ``--env NAME:VAR=VALUE``);
all the servers run at once. Each round runs every (side, protocol) pair once, in a
rotating order, through ``bench/protocol_load.py`` (the same hand-written client for each
protocol), and records the server's CPU time per answered request. Prints per pair the
medians over the rounds and, round by round, the median ratio of p50 and CPU per request
to the first pair's, and the median p50 difference (ms).

    python bench/grpc_ab.py --tree main=/work/main/src --tree now=src \\
        --protocols rest-binary,grpc-raw --rounds 7

Protocols ``rest-live`` and ``grpc-live`` (the v2 liveness call, no model) measure what
each transport costs on its own; ``--empty sync,aio,aio-uvloop`` adds grpcio's own floor,
an empty handler on a bare grpcio server of each kind (``bench/grpc_empty.py``), driven
with ``grpc-live``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ab import side_environment
from proc_stats import tree_cpu_seconds
from protocols import median_cell, per_round
from served import SHAPES, Served

ROOT = Path(__file__).resolve().parents[1]
LOAD = Path(__file__).with_name("protocol_load.py")


class Empty:
    """``bench/grpc_empty.py`` in its own process, shaped as ``Served`` is for ``load``."""

    def __init__(self, kind: str) -> None:
        script = Path(__file__).with_name("grpc_empty.py")
        self.proc = subprocess.Popen([sys.executable, str(script), kind],
                                     stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert self.proc.stdout is not None
        self.grpc = f"127.0.0.1:{self.proc.stdout.readline().strip()}"
        self.url = ""

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def load(
    server: Served | Empty, protocol: str, model: str, c: int, seconds: float
) -> dict[str, float]:
    """One run of ``protocol_load.py``, with the server's CPU time per answered request."""
    address = server.grpc if protocol.startswith("grpc") else server.url.split("://")[1]
    shape = ",".join(map(str, SHAPES[model]))
    before = tree_cpu_seconds(server.proc.pid)
    done = subprocess.run(
        [sys.executable, str(LOAD), protocol, address, model, "image", shape, "-c", str(c),
         "--seconds", f"{seconds:g}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    used = tree_cpu_seconds(server.proc.pid) - before
    figures["cpu_us"] = used / max(1, figures["ok"]) * 1e6
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", default=[], help="NAME=path/to/src")
    parser.add_argument("--env", action="append", default=[],
                        help="NAME:VAR=VALUE, an environment variable for one side")  # fmt: skip
    parser.add_argument("--models", type=Path, default=ROOT / "examples" / "models")
    parser.add_argument("--model", default="mlp", choices=sorted(SHAPES))
    parser.add_argument("--protocols", default="rest-binary,grpc-raw")
    parser.add_argument("--c", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--empty", default="", help="grpcio's empty servers: sync,aio,...")
    args = parser.parse_args()
    trees = {name: Path(path).resolve() for name, _, path in (t.partition("=") for t in args.tree)}
    if not trees:
        raise SystemExit("give at least one side (--tree NAME=SRC)")
    protocols = args.protocols.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "models"
        repo.mkdir()
        shutil.copytree(args.models / args.model, repo / args.model)
        servers: dict[str, Served | Empty] = {}
        try:
            for name, src in trees.items():
                servers[name] = Served(repo, env=side_environment(name, src, args.env))
            pairs = [(name, protocol) for name in servers for protocol in protocols]
            for kind in filter(None, args.empty.split(",")):
                servers[f"empty-{kind}"] = Empty(kind)
                pairs.append((f"empty-{kind}", "grpc-live"))
            for name, protocol in pairs:  # unmeasured: the model's first calls, connections
                load(servers[name], protocol, args.model, args.c, 1.0)
            runs: dict[tuple[str, str], list[dict[str, float]]] = {p: [] for p in pairs}
            for index in range(args.rounds):
                shift = index % len(pairs)
                for name, protocol in pairs[shift:] + pairs[:shift]:
                    runs[name, protocol].append(
                        load(servers[name], protocol, args.model, args.c, args.seconds)
                    )
            report(args.model, args.c, runs)
        finally:
            for server in servers.values():
                server.stop()
    return 0


def report(model: str, c: int, runs: dict[tuple[str, str], list[dict[str, float]]]) -> None:
    pairs = list(runs)
    base = runs[pairs[0]]
    print(f"\n{model} c={c}  (medians over {len(base)} rounds; per-round vs {pairs[0]})")
    print(f"{'side/protocol':28s}{'req/s':>8s}{'p50 ms':>9s}{'p99 ms':>9s}{'CPU us':>8s}"
          f"{'cli us':>8s}{'p50 x':>8s}{'p50 +ms':>9s}{'CPU x':>8s}{'failed':>7s}")  # fmt: skip
    for pair in pairs:
        cell = median_cell(runs[pair], ("rps", "p50_ms", "p99_ms", "cpu_us", "client_cpu_us"))
        first = {"rounds": base}
        p50_x = per_round(cell, first, "p50_ms", lambda m, b: m / b)
        gap = per_round(cell, first, "p50_ms", lambda m, b: m - b)
        cpu_x = per_round(cell, first, "cpu_us", lambda m, b: m / b)
        failed = sum(r["failed"] for r in runs[pair])
        print(f"{'/'.join(pair):28s}{cell['rps']:8.0f}{cell['p50_ms']:9.3f}{cell['p99_ms']:9.3f}"
              f"{cell['cpu_us']:8.0f}{cell['client_cpu_us']:8.0f}{p50_x:8.3f}{gap:+9.3f}"
              f"{cpu_x:8.3f}{failed:7.0f}")  # fmt: skip
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
