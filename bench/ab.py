"""Several builds of ``keepwarm serve`` against each other, measured so that the comparison
survives a shared machine whose speed drifts within minutes.

Each side is a source tree (``--tree NAME=PATH/src``, the same tree twice with
different ``--env NAME:VAR=VALUE``; ``--off NAME``: that side serves the model without
its ``model.toml``, batching off) or a commit (``--commit NAME=REV``,
checked out into a temporary worktree and removed at the end). All the servers run at
once, on the same copy of the example models; each cell (model, concurrency) alternates
short ``wrk`` runs over the sides, ``--rounds`` times, in a rotating order, so that the
drift hits every side alike. Besides req/s and p50, each run records the server's CPU
time per answered request (user + system time of the server's process tree, from
``/proc``): the figure that other work on the machine disturbs least; and the event loop's
(the server's main thread) CPU µs per request, in nanoseconds' precision, for changes to
the loop's own work.

    python bench/ab.py --commit before=HEAD~3 --tree now=src --model mlp --c 1,32

Prints, per cell and side, the medians over the rounds and each side's median ratio of
req/s and CPU per request to the first side's, round by round.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import orjson

from peers import first_200
from proc_stats import thread_cpu_seconds, tree_cpu_seconds
from serve import LUA, MODELS, ROOT, Served, write_bodies, wrk


def sides(args: argparse.Namespace, scratch: Path) -> tuple[dict[str, Path], list[Path]]:
    """``{name: src dir}`` in the order given, and the worktrees made for commits."""
    out: dict[str, Path] = {}
    made: list[Path] = []
    for spec in args.tree:
        name, _, path = spec.partition("=")
        out[name] = Path(path).resolve()
    for spec in args.commit:
        name, _, rev = spec.partition("=")
        where = scratch / f"tree-{name}"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), rev],
                       check=True, capture_output=True)  # fmt: skip
        made.append(where)
        out[name] = where / "src"
    if len(out) < 2:
        raise SystemExit("give at least two sides (--tree NAME=SRC, --commit NAME=REV)")
    return out, made


def side_environment(name: str, src: Path, specs: list[str]) -> dict[str, str]:
    """The environment of side ``name``: this one, ``src`` first on the path, and the
    ``NAME:VAR=VALUE`` assignments of ``specs`` that are for it."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    for spec in specs:
        side, _, assignment = spec.partition(":")
        if side == name:
            variable, _, value = assignment.partition("=")
            env[variable] = value
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", default=[], help="NAME=path/to/src")
    parser.add_argument("--commit", action="append", default=[], help="NAME=git revision")
    parser.add_argument("--models", type=Path, default=ROOT / "examples" / "models")
    parser.add_argument("--model", default="mlp", choices=MODELS)
    parser.add_argument("--c", default="1,32", help="concurrencies, comma-separated")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--serve-args", default="", help="extra `keepwarm serve` arguments")
    parser.add_argument("--api", default="v2", choices=("v2", "v2-nested", "tfserving"),
                        help="JSON bodies for KServe v2 (flat or nested 'data') or TF "
                             "Serving (rows)")  # fmt: skip
    parser.add_argument("--env", action="append", default=[],
                        help="NAME:VAR=VALUE, an environment variable for one side")  # fmt: skip
    parser.add_argument("--off", action="append", default=[],
                        help="NAME: that side serves the model without its model.toml "
                             "(batching off)")  # fmt: skip
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench/ab.py needs wrk (apt-get install wrk)")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        trees, made = sides(args, scratch)
        try:
            return run(args, trees, scratch)
        finally:
            remove_worktrees(made)


def remove_worktrees(made: list[Path]) -> None:
    """Remove the worktrees ``sides`` made for commits."""
    for where in made:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where)],
                       check=False, capture_output=True)  # fmt: skip


def run(args: argparse.Namespace, trees: dict[str, Path], scratch: Path) -> int:
    repo, plain = repositories(args.models, args.model, scratch)
    script = scratch / "bodies.lua"
    script.write_text(LUA)
    v2 = write_bodies(scratch)[args.model]
    bodies = {"tfserving": tfserving_bodies, "v2-nested": nested_bodies}.get(
        args.api, lambda paths: paths
    )(v2)
    servers: dict[str, Served] = {}
    try:
        for name, src in trees.items():
            env = side_environment(name, src, args.env)
            where = plain if name in args.off else repo
            servers[name] = Served(where, env=env, extra=args.serve_args.split())
            first_200(servers[name], {args.model: v2[0].read_bytes()})
        names = list(servers)
        for c in (int(x) for x in args.c.split(",")):
            runs: dict[str, list[dict[str, float]]] = {n: [] for n in names}
            for name in names:  # one unmeasured run each: connections and first batches
                wrk(url(servers[name], args), bodies, c, 1, script)
            for index in range(args.rounds):
                shift = index % len(names)
                for name in names[shift:] + names[:shift]:
                    server = servers[name]
                    before = tree_cpu_seconds(server.proc.pid)
                    loop_before = thread_cpu_seconds(server.proc.pid)
                    figures = wrk(url(server, args), bodies, c, args.seconds, script)
                    used = tree_cpu_seconds(server.proc.pid) - before
                    loop = thread_cpu_seconds(server.proc.pid) - loop_before
                    answered = max(figures["rps"] * args.seconds, 1)
                    figures["cpu_us"] = used / answered * 1e6
                    figures["loop_us"] = loop / answered * 1e6
                    runs[name].append(figures)
            report(args.model, c, runs)
    finally:
        for server in servers.values():
            server.stop()
    return 0


def repositories(models: Path, model: str, scratch: Path) -> tuple[Path, Path]:
    """Two model repositories under ``scratch`` holding a copy of ``models/model``: as
    given, and without its ``model.toml`` (batching off: the ``--off`` sides')."""
    repo, plain = scratch / "models", scratch / "models-off"
    for where in (repo, plain):
        shutil.copytree(models / model, where / model)
    (plain / model / "model.toml").unlink(missing_ok=True)
    return repo, plain


def tfserving_bodies(bodies: list[Path]) -> list[Path]:
    """The same tensors as TF Serving ``:predict`` bodies (``{"instances": ...}``)."""
    out = []
    for path in bodies:
        tensor = orjson.loads(path.read_bytes())["inputs"][0]
        rows = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        out.append(path.with_suffix(".tfserving.json"))
        out[-1].write_bytes(orjson.dumps({"instances": rows}, option=orjson.OPT_SERIALIZE_NUMPY))
    return out


def nested_bodies(bodies: list[Path]) -> list[Path]:
    """The same v2 bodies with each tensor's ``data`` nested to its shape, as
    ``tolist()`` of an image gives it (``[[[[r, g, b], ...]]]``)."""
    out = []
    for path in bodies:
        body = orjson.loads(path.read_bytes())
        for tensor in body["inputs"]:
            tensor["data"] = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        out.append(path.with_suffix(".nested.json"))
        out[-1].write_bytes(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY))
    return out


def url(server: Served, args: argparse.Namespace) -> str:
    if args.api == "tfserving":
        return f"{server.url}/v1/models/{args.model}:predict"
    return server.infer_url(args.model)


def report(model: str, c: int, runs: dict[str, list[dict[str, float]]]) -> None:
    names = list(runs)
    base = runs[names[0]]
    print(f"\n{model} c={c}  (medians over {len(base)} rounds; ratios to {names[0]!r})")
    print(f"{'side':14s}{'req/s':>9s}{'p50 ms':>9s}{'p99 ms':>9s}{'CPU us/req':>12s}"
          f"{'loop us':>9s}{'req/s x':>9s}{'CPU x':>8s}{'loop x':>8s}{'failed':>8s}")  # fmt: skip
    for name in names:
        mine = runs[name]

        def med(key: str, rows: list[dict[str, float]] = mine) -> float:
            return statistics.median(r[key] for r in rows)

        rps_x = statistics.median(m["rps"] / b["rps"] for m, b in zip(mine, base, strict=True))
        cpu_x, loop_x = (
            statistics.median(m[key] / b[key] for m, b in zip(mine, base, strict=True))
            for key in ("cpu_us", "loop_us")
        )
        failed = sum(r["failed"] for r in mine)
        print(f"{name:14s}{med('rps'):9.0f}{med('p50_ms'):9.3f}{med('p99_ms'):9.3f}"
              f"{med('cpu_us'):12.0f}{med('loop_us'):9.1f}{rps_x:9.3f}{cpu_x:8.3f}"
              f"{loop_x:8.3f}{failed:8.0f}")  # fmt: skip
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
