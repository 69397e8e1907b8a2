"""Issue 9's low-concurrency cells: the MLP through ``keepwarm serve`` with its ``[batching]``
table (``on``) against without it (``off``), per source tree, measured as ``bench/ab.py``
measures (all servers up at once, short ``wrk`` runs interleaved in a rotating order,
rounds), so that a machine whose speed drifts within minutes hits every side alike.

Per tree and concurrency: each side's median req/s, p50, server CPU µs per answered
request (process tree) and event loop CPU µs per request; the median of the per-round
ratios (req/s on/off) and of the per-round p50 differences (on - off), the figures the
issue's targets are judged on (c1: >= 0.95x and p50 within 0.05 ms; c4, c8: >= 0.97x and
within 0.05 ms). With two trees (``--tree before=... --tree now=src`` or ``--commit``),
the second tree's ``on`` against the first's is printed too (the change's own effect).

    python bench/c1_onoff.py --tree now=src --c 1,4,8 --rounds 6 [--body binary]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from ab import remove_worktrees, side_environment
from binary_limit import LUA_BINARY, binary_body
from inproc_ab import trees_given
from peers import first_200
from proc_stats import thread_cpu_seconds, tree_cpu_seconds
from serve import LUA, ROOT, Served, inputs, write_bodies, wrk

MODEL = "mlp"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", default=[], help="NAME=path/to/src")
    parser.add_argument("--commit", action="append", default=[], help="NAME=git revision")
    parser.add_argument("--models", type=Path, default=ROOT / "examples" / "models")
    parser.add_argument("--c", default="1,4,8", help="concurrencies, comma-separated")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--body", default="json", choices=("json", "binary"))
    parser.add_argument("--env", action="append", default=[],
                        help="NAME:VAR=VALUE, an environment variable for one tree")  # fmt: skip
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench/c1_onoff.py needs wrk (apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="c1-onoff-") as tmp:
        scratch = Path(tmp)
        if not args.tree and not args.commit:
            args.tree = ["now=src"]
        trees, made = trees_given(args, scratch)
        try:
            return run(args, trees, scratch)
        finally:
            remove_worktrees(made)


def run(args: argparse.Namespace, trees: dict[str, Path], scratch: Path) -> int:
    repos = {on: scratch / f"models-{'on' if on else 'off'}" for on in (True, False)}
    for on, repo in repos.items():
        shutil.copytree(args.models / MODEL, repo / MODEL)
        if not on:
            (repo / MODEL / "model.toml").unlink()
    json_bodies = write_bodies(scratch)[MODEL]
    script = scratch / "bodies.lua"
    if args.body == "json":
        script.write_text(LUA)
        bodies: list[str] = [str(p) for p in json_bodies]
    else:
        script.write_text(LUA_BINARY)
        bodies = []
        for i, x in enumerate(inputs(MODEL, 8)):
            data, length = binary_body(x)
            (scratch / f"bin-{i}").write_bytes(data)
            bodies.append(f"{scratch / f'bin-{i}'}:{length}")
    servers: dict[str, Served] = {}
    try:
        for name, src in trees.items():
            env = side_environment(name, src, args.env)
            for on in (True, False):
                side = f"{name}/{'on' if on else 'off'}"
                servers[side] = Served(repos[on], env=env)
                first_200(servers[side], {MODEL: json_bodies[0].read_bytes()})
        for c in (int(x) for x in args.c.split(",")):
            runs = measure(servers, bodies, script, c, args)
            report(c, list(trees), runs)
    finally:
        for server in servers.values():
            server.stop()
    return 0


def measure(
    servers: dict[str, Served], bodies: list[str], script: Path, c: int, args: argparse.Namespace
) -> dict[str, list[dict[str, float]]]:
    """Per side, one figure set per round (the sides taken in a rotating order)."""
    names = list(servers)
    runs: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for name in names:  # one unmeasured run each: connections, the first batches
        wrk(servers[name].infer_url(MODEL), bodies, c, 1, script)
    for index in range(args.rounds):
        shift = index % len(names)
        order = names[shift:] + names[:shift]
        if index % 2:
            order.reverse()
        for name in order:
            server = servers[name]
            before = tree_cpu_seconds(server.proc.pid)
            loop_before = thread_cpu_seconds(server.proc.pid)
            figures = wrk(server.infer_url(MODEL), bodies, c, args.seconds, script)
            answered = max(figures["rps"] * args.seconds, 1)
            figures["cpu_us"] = (tree_cpu_seconds(server.proc.pid) - before) / answered * 1e6
            figures["loop_us"] = (
                (thread_cpu_seconds(server.proc.pid) - loop_before) / answered * 1e6
            )
            runs[name].append(figures)
    return runs


def report(c: int, trees: list[str], runs: dict[str, list[dict[str, float]]]) -> None:
    print(f"\nMLP c={c} {len(next(iter(runs.values())))} rounds")
    print(f"{'side':16s}{'req/s':>8s}{'p50 ms':>8s}{'p99 ms':>8s}{'CPU us':>8s}{'loop us':>8s}")
    for name, rows in runs.items():

        def med(key: str, rows: list[dict[str, float]] = rows) -> float:
            return statistics.median(r[key] for r in rows)

        print(f"{name:16s}{med('rps'):8.0f}{med('p50_ms'):8.3f}{med('p99_ms'):8.3f}"
              f"{med('cpu_us'):8.0f}{med('loop_us'):8.1f}")  # fmt: skip
    for tree in trees:
        on, off = runs[f"{tree}/on"], runs[f"{tree}/off"]
        ratios = [a["rps"] / b["rps"] for a, b in zip(on, off, strict=True)]
        diffs = [a["p50_ms"] - b["p50_ms"] for a, b in zip(on, off, strict=True)]
        cpu = [a["cpu_us"] / b["cpu_us"] for a, b in zip(on, off, strict=True)]
        more = {key: statistics.median(a[key] - b[key] for a, b in zip(on, off, strict=True))
                for key in ("cpu_us", "loop_us")}  # fmt: skip
        print(f"{tree}: on/off req/s {statistics.median(ratios):.3f}x "
              f"{[round(r, 3) for r in ratios]}; p50 on-off {statistics.median(diffs):+.3f} ms; "
              f"CPU/req on/off {statistics.median(cpu):.3f}x; on-off per request: "
              f"CPU {more['cpu_us']:+.1f} us, loop {more['loop_us']:+.1f} us")  # fmt: skip
    if len(trees) > 1:
        base, now = runs[f"{trees[0]}/on"], runs[f"{trees[-1]}/on"]
        ratios = [a["rps"] / b["rps"] for a, b in zip(now, base, strict=True)]
        cpu = [a["cpu_us"] / b["cpu_us"] for a, b in zip(now, base, strict=True)]
        print(f"{trees[-1]}/on vs {trees[0]}/on: req/s {statistics.median(ratios):.3f}x, "
              f"CPU/req {statistics.median(cpu):.3f}x")  # fmt: skip
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
