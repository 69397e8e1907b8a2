"""The MLP at concurrency 1 against its floors (issue 7: p50 at most 0.3 ms above the direct
call), all measured in one run of interleaved rounds:

- ``direct``: the signature called in-process through ``keepwarm.load`` (no HTTP), back to
  back on one thread; ``direct-default`` the same with ``tf_executor = "default"`` (where
  ``--src`` has the option: TensorFlow's default executor, as before it);
  ``direct-paused`` the same with a 0.2 ms sleep before each call (a lone HTTP client's
  calls are that far apart at least: the call itself is slower then);
- ``bare-inline``: a bare ASGI app on uvicorn (httptools, uvloop) calling the signature on
  the event loop (``bench/bare_mlp.py``);
- ``bare-thread``: the same with the call on one worker thread (one hop each way,
  ``run_in_executor``);
- ``bare-hop``: the same hop through ``keepwarm.hop.HopPool``, the hand-off keepwarm's
  requests take: the floor of a server whose model never runs on the event loop;
- ``bare-numpy``: ``bare-inline`` with the MLP computed in numpy (no TensorFlow): the HTTP
  round trip's own floor; ``bare-session``: ``bare-inline`` with the signature run by a
  TensorFlow 1 session whose kernels run on the calling thread (no hand-off to
  TensorFlow's inter-op thread, which the eager call of a function always makes);
- ``kw-on`` / ``kw-off``: ``keepwarm serve`` with the MLP's ``[batching]`` table and
  without it; with ``--base-src``, ``base-on`` / ``base-off`` the same from that tree
  (``/work/main/src``, say), so that two trees are judged against one limit;

each on KServe v2 JSON and binary bodies (``wrk -t1 -c1``, 8 different bodies rotated).
Per side: p50, req/s and the server's CPU µs per request (its process tree, ``/proc``);
for the bare sides also the model call's own median wall and CPU time inside the server
(``call us``, ``call CPU``: the calling thread's), to set beside ``direct``'s.

    python bench/c1_floor.py --models .test-cache/examples/models --rounds 5 \\
        [--base-src ../main/src]

"above direct" is against ``direct`` (the library's call as ``--src`` makes it).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from binary_limit import LUA_BINARY, binary_body
from direct_call import MODEL, Direct
from peers import first_200
from proc_stats import tree_cpu_seconds
from serve import LUA, ROOT, Served, inputs, write_bodies, wrk

#: ``direct-paused``'s sleep before each call: about a lone HTTP client's round trip.
PAUSE = 0.0002


class Bare:
    """``bench/bare_mlp.py`` in its own process, on a free port."""

    def __init__(
        self, model_dir: Path, mode: str, env: dict[str, str], call: str = "keepwarm"
    ) -> None:
        self.name = f"bare-{mode}"
        self.started = time.perf_counter()
        here = Path(__file__).with_name("bare_mlp.py")
        command = [sys.executable, str(here), str(model_dir), "--mode", mode, "--call", call]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env)  # fmt: skip
        self.lines: list[str] = []
        self.url = ""
        found = threading.Event()

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                match = re.match(r"PORT (\d+)", line)
                if match:
                    self.url = f"http://127.0.0.1:{match.group(1)}"
                    found.set()
            found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(120) or not self.url:
            raise SystemExit(f"{self.name} did not start:\n" + "".join(self.lines))

    def infer_url(self, model: str) -> str:
        return f"{self.url}/v2/models/{model}/infer"

    def call_times(self) -> dict[str, float]:
        """The model call's median wall and CPU µs in the server since the last asking."""
        with urllib.request.urlopen(self.url + "/", timeout=10) as answer:
            figures: dict[str, float] = orjson.loads(answer.read())
        return figures

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / "examples" / "models")
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="keepwarm's source")
    parser.add_argument("--base-src", type=Path, help="another tree's source: base-on/off")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench/c1_floor.py needs wrk (apt-get install wrk)")
    with tempfile.TemporaryDirectory() as tmp:
        return run(args, Path(tmp))


def run(args: argparse.Namespace, work: Path) -> int:
    repos = {on: work / f"models-{on}" for on in (True, False)}
    for on, repo in repos.items():
        shutil.copytree(args.models / MODEL, repo / MODEL)
        if not on:
            (repo / MODEL / "model.toml").unlink()
    scripts = {"json": work / "json.lua", "binary": work / "binary.lua"}
    scripts["json"].write_text(LUA)
    scripts["binary"].write_text(LUA_BINARY)
    bodies: dict[str, list[str]] = {"json": [str(p) for p in write_bodies(work)[MODEL]]}
    bodies["binary"] = []
    for i, x in enumerate(inputs(MODEL, 8)):
        data, length = binary_body(x)
        (work / f"bin-{i}").write_bytes(data)
        bodies["binary"].append(f"{work / f'bin-{i}'}:{length}")
    first = Path(bodies["json"][0]).read_bytes()
    env = {**os.environ, "PYTHONPATH": str(args.src.resolve())}
    servers: dict[str, Any] = {}
    try:
        servers["bare-inline"] = Bare(repos[False] / MODEL / "1", "inline", env)
        servers["bare-thread"] = Bare(repos[False] / MODEL / "1", "thread", env)
        servers["bare-hop"] = Bare(repos[False] / MODEL / "1", "hop", env)
        servers["bare-numpy"] = Bare(repos[False] / MODEL / "1", "inline", env, "numpy")
        servers["bare-session"] = Bare(repos[False] / MODEL / "1", "inline", env, "session")
        servers["kw-on"] = Served(repos[True], env=env)
        servers["kw-off"] = Served(repos[False], env=env)
        if args.base_src:
            base = {**os.environ, "PYTHONPATH": str(args.base_src.resolve())}
            servers["base-on"] = Served(repos[True], env=base)
            servers["base-off"] = Served(repos[False], env=base)
        for server in servers.values():
            first_200(server, {MODEL: first})
        default = {"tf_executor": "default"}
        direct = {"direct": Direct(repos[False] / MODEL),
                  "direct-default": Direct(repos[False] / MODEL, default),
                  "direct-paused": Direct(repos[False] / MODEL, pause=PAUSE)}  # fmt: skip
        table = measure(args, servers, direct, bodies, scripts)
    finally:
        for server in servers.values():
            server.stop()
    if args.json:
        args.json.write_bytes(orjson.dumps(table, option=orjson.OPT_INDENT_2))
    return 0


def measure(args: argparse.Namespace, servers: dict[str, Any], direct: dict[str, Direct],
            bodies: dict[str, list[str]], scripts: dict[str, Path]) -> dict[str, Any]:  # fmt: skip
    names = [*direct, *servers]
    table: dict[str, Any] = {}
    for kind in ("json", "binary"):
        runs: dict[str, list[dict[str, float]]] = {n: [] for n in names}
        for server in servers.values():  # unmeasured: connections, first batches
            wrk(server.infer_url(MODEL), bodies[kind], 1, 1, scripts[kind])
        for index in range(args.rounds):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                if name in direct:
                    runs[name].append(direct[name].run(args.seconds))
                    continue
                server = servers[name]
                if isinstance(server, Bare):
                    server.call_times()  # from here on
                before = tree_cpu_seconds(server.proc.pid)
                figures = wrk(server.infer_url(MODEL), bodies[kind], 1, args.seconds,
                              scripts[kind])  # fmt: skip
                used = tree_cpu_seconds(server.proc.pid) - before
                figures["cpu_us"] = used / max(figures["rps"] * args.seconds, 1) * 1e6
                if isinstance(server, Bare):
                    times = server.call_times()
                    figures["call_us"], figures["call_cpu_us"] = times["wall_us"], times["cpu_us"]
                runs[name].append(figures)
        table[kind] = report(kind, runs)
    return table


def report(kind: str, runs: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    direct = runs["direct"]
    print(f"\nMLP c=1 v2 {kind}  (medians over {len(direct)} rounds; "
          "'above direct': median per-round p50 minus direct's)")  # fmt: skip
    print(f"{'side':15s}{'req/s':>8s}{'p50 ms':>9s}{'above direct':>14s}{'CPU us/req':>12s}"
          f"{'call us':>9s}{'call CPU':>10s}")  # fmt: skip
    out = {}
    for name, mine in runs.items():
        above = statistics.median(
            m["p50_ms"] - d["p50_ms"] for m, d in zip(mine, direct, strict=True)
        )
        keys = [k for k in ("rps", "p50_ms", "cpu_us", "call_us", "call_cpu_us") if k in mine[0]]
        row = {key: statistics.median(r[key] for r in mine) for key in keys}
        row["above_direct_ms"] = above
        out[name] = row
        call = "".join(f"{row[k]:>{w}.0f}" if k in row else " " * w
                       for k, w in (("call_us", 9), ("call_cpu_us", 10)))  # fmt: skip
        print(
            f"{name:15s}{row['rps']:8.0f}{row['p50_ms']:9.3f}{above:14.3f}{row['cpu_us']:12.0f}"
            + call
        )
    sys.stdout.flush()
    return out


if __name__ == "__main__":
    sys.exit(main())
