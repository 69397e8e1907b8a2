"""MobileNetV2, 32 single-image clients with binary tensors (the v2 binary extension)
through ``keepwarm serve``, against its limit: the same SavedModel signature called
in-process on batches of 32 (issue 9: the server at least 0.9x). The two are measured in
alternated rounds (a ``wrk`` run on each server, then the limit's loop), so that the
machine's drift (2-4x within minutes here) hits both alike; the ratio is the median of
the per-round ratios. Each run also records the CPU time per image (the server's process
tree from ``/proc``; the limit's own process, each round's too), context switches and
minor page faults (memory touched afresh) per image, and the server's batch sizes from
``/metrics``: what a shared machine disturbs least, and where a gap comes from.

``bench/serve_batching.py`` runs this cell on one server; run alone, it compares source
trees (each a ``keepwarm serve``, all up at once):

    python bench/binary_limit.py --tree main=/work/main/src --tree mine=src --rounds 5
    python bench/binary_limit.py --tree a=src --tree b=src --env b:TF_NUM_INTEROP_THREADS=2
    python bench/binary_limit.py --tree a=src --tree b=src --env b:KEEPWARM_SERVER__PROCESSES=2

A server of several processes is read whole (its supervisor and server processes' CPU,
context switches and faults; its batch sizes from the merged ``/metrics``).
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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from peers import first_200
from proc_stats import tree_cpu_seconds, tree_pids
from serve import LUA, ROOT, Served, inputs, v2_body, wrk
from thread_costs import thread_stats

MODEL = "mobilenet_v2"
LUA_BINARY = r"""
local bodies, lengths = {}, {}
local i = 0
function init(args)
  for n, arg in ipairs(args) do
    local path, length = arg:match("^(.*):(%d+)$")
    local f = assert(io.open(path, "rb")); bodies[n] = f:read("*a"); f:close()
    lengths[n] = length
  end
end
function request()
  i = i % #bodies + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/octet-stream",
    ["Inference-Header-Content-Length"] = lengths[i]}, bodies[i])
end
""" + LUA[LUA.index("function done") :]


def binary_body(x: np.ndarray) -> tuple[bytes, int]:
    header = orjson.dumps(
        {"inputs": [{"name": "image", "datatype": "FP32", "shape": list(x.shape),
                     "parameters": {"binary_data_size": x.nbytes}}]}
    )  # fmt: skip
    return header + x.tobytes(), len(header)


def write_binary_bodies(work: Path, count: int) -> list[str]:
    """``count`` MobileNetV2 binary bodies under ``work``, as ``LUA_BINARY`` reads them."""
    found = []
    for i, x in enumerate(inputs(MODEL, count)):
        data, length = binary_body(x)
        (work / f"bin-{i}").write_bytes(data)
        found.append(f"{work / f'bin-{i}'}:{length}")
    return found


class Limit:
    """The limit: ``model_dir`` loaded in this process (batching off), called on batches
    of 32 in a loop; ``run(seconds)`` gives images/s and CPU µs per image."""

    def __init__(self, model_dir: Path) -> None:
        import keepwarm

        self._model = keepwarm.load(str(model_dir), batching=False)
        self._x = np.concatenate(inputs(MODEL, 32))
        self._model.predict(self._x)

    def run(self, seconds: float) -> dict[str, float]:
        predict, x = self._model.predict, self._x
        count, before, switched = 0, os.times(), switches(os.getpid())
        faults = minor_faults(os.getpid())
        began = time.perf_counter()
        while time.perf_counter() - began < seconds:
            predict(x)
            count += 32
        took, after = time.perf_counter() - began, os.times()
        used = after.user - before.user + after.system - before.system
        switched = switches(os.getpid()) - switched
        faults = minor_faults(os.getpid()) - faults
        return {"rps": count / took, "cpu_us": used / count * 1e6, "switches": switched / count,
                "faults": faults / count}  # fmt: skip


def minor_faults(pid: int) -> int:
    """Minor page faults of ``pid`` so far (all its threads): fresh memory being touched,
    as when a large array is allocated anew for each batch."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


def switches(pid: int) -> int:
    """Context switches (voluntary and not) of ``pid``'s live threads so far."""
    return sum(t.voluntary + t.involuntary for t in thread_stats(pid).values())


def new_batches(before: dict[int, float], after: dict[int, float]) -> dict[int, int]:
    """The batches run between two ``batch_sizes`` readings, by size."""
    return {s: int(n - before.get(s, 0)) for s, n in after.items() if n > before.get(s, 0)}


def tree_switches(pid: int) -> int:
    """``switches`` over ``pid`` and its descendants (a ``--processes N`` server)."""
    return sum(_alive(switches, p) for p in tree_pids(pid))


def tree_faults(pid: int) -> int:
    """``minor_faults`` over ``pid`` and its descendants."""
    return sum(_alive(minor_faults, p) for p in tree_pids(pid))


def _alive(count: Callable[[int], int], pid: int) -> int:
    try:
        return count(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0  # ended meanwhile


def batch_sizes(url: str, model: str = MODEL) -> dict[int, float]:
    """The server's batches of ``model`` run so far, by size (``keepwarm_batches_total``)."""
    text = subprocess.run(["curl", "-s", url + "/metrics"], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip
    pattern = r'keepwarm_batches_total\{[^}]*model="' + model + r'"[^}]*size="(\d+)"[^}]*\} (\S+)'
    return {int(m.group(1)): float(m.group(2)) for m in re.finditer(pattern, text)}


def server_run(served: Served, bodies: list[str], seconds: int, script: Path) -> dict[str, Any]:
    """One ``wrk -c32`` run on ``served``: its figures, CPU µs per image, batch sizes."""
    pid = served.proc.pid
    sizes, before, switched = batch_sizes(served.url), tree_cpu_seconds(pid), tree_switches(pid)
    faults = tree_faults(pid)
    figures = wrk(served.infer_url(MODEL), bodies, 32, seconds, script)
    used, switched = tree_cpu_seconds(pid) - before, tree_switches(pid) - switched
    faults = tree_faults(pid) - faults
    after = batch_sizes(served.url)
    images = max(figures["rps"] * seconds, 1)
    figures["cpu_us"] = used / images * 1e6
    figures["switches"] = switched / images
    figures["faults"] = faults / images
    figures["sizes"] = new_batches(sizes, after)
    return figures


def interleaved(
    servers: dict[str, Served],
    limit: Limit,
    bodies: list[str],
    script: Path,
    rounds: int,
    seconds: int,
) -> dict[str, Any]:
    """Each server and the limit in turn, ``rounds`` times (``seconds`` per run, whole:
    wrk's unit): per side the median figures and the per-round ratios to the limit."""
    for served in servers.values():
        wrk(served.infer_url(MODEL), bodies, 32, 1, script)  # connections, first batches
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in [*servers, "limit"]}
    for index in range(rounds):
        order = [*servers, "limit"]
        shift = index % len(order)
        for name in order[shift:] + order[:shift]:
            if name == "limit":
                runs[name].append(limit.run(seconds))
            else:
                runs[name].append(server_run(servers[name], bodies, seconds, script))
    out: dict[str, Any] = {}
    for name, mine in runs.items():
        ratios = [m["rps"] / b["rps"] for m, b in zip(mine, runs["limit"], strict=True)]
        out[name] = {
            "rps": statistics.median(r["rps"] for r in mine),
            "cpu_us": statistics.median(r["cpu_us"] for r in mine),
            "switches": statistics.median(r["switches"] for r in mine),
            "faults": statistics.median(r["faults"] for r in mine),
            "cpus": [round(r["cpu_us"]) for r in mine],
            "p50_ms": statistics.median(r.get("p50_ms", float("nan")) for r in mine),
            "ratio": statistics.median(ratios),
            "ratios": [round(r, 3) for r in ratios],
            "failed": sum(r.get("failed", 0) for r in mine),
            "sizes": [r.get("sizes", {}) for r in mine],
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", default=[], help="NAME=path/to/src")
    parser.add_argument("--models", type=Path, default=ROOT / "examples" / "models")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--env", action="append", default=[],
                        help="NAME:VAR=VALUE, an environment variable for one side")  # fmt: skip
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench/binary_limit.py needs wrk (apt-get install wrk)")
    trees = dict(spec.partition("=")[::2] for spec in args.tree) or {"here": str(ROOT / "src")}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repo = work / "models"
        shutil.copytree(args.models / MODEL, repo / MODEL)
        script = work / "binary.lua"
        script.write_text(LUA_BINARY)
        bodies = write_binary_bodies(work, 8)
        first = v2_body(inputs(MODEL, 1)[0])
        servers: dict[str, Served] = {}
        try:
            for name, src in trees.items():
                env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
                for spec in args.env:
                    side, _, assignment = spec.partition(":")
                    if side == name:
                        variable, _, value = assignment.partition("=")
                        env[variable] = value
                servers[name] = Served(repo, env=env)
                first_200(servers[name], {MODEL: first})
            found = interleaved(servers, Limit(repo / MODEL), bodies, script, args.rounds,
                                args.seconds)  # fmt: skip
        finally:
            for served in servers.values():
                served.stop()
    print(f"{MODEL} c=32 binary against in-process batch 32 ({args.rounds} rounds; medians)")
    print(f"{'side':12s}{'img/s':>8s}{'CPU us/img':>12s}{'cs/img':>8s}{'flt/img':>8s}"
          f"{'x limit':>9s}  per round")  # fmt: skip
    for name, x in found.items():
        print(f"{name:12s}{x['rps']:8.1f}{x['cpu_us']:12.0f}{x['switches']:8.1f}{x['faults']:8.1f}"
              f"{x['ratio']:9.3f}  {x['ratios']}")  # fmt: skip
    for name, x in found.items():
        print(f"{name} CPU us/img per round: {x['cpus']}")
    for name in servers:
        print(f"{name} batch sizes per round: {found[name]['sizes']}")
    print(f"load average {os.getloadavg()[0]:.1f} (noisy when high)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
