"""The server against its limit: ``keepwarm serve`` over HTTP versus the same model called
in-process (the limit, measured in the same run), on the MLP and MobileNetV2 example
SavedModels, at concurrency 1, 8 and 32; and the cold start, from ``keepwarm serve`` to the
first 200 on both models, against the same imports, loads and warmups done in-process.

The load generator is ``wrk -t1`` in its own process (``apt-get install wrk``), with a Lua
script that rotates several different KServe v2 JSON bodies and counts only 2xx answers.
The protocols against each other (issue 8, ``bench/protocols.py``): REST JSON, REST with
the binary tensor extension and gRPC with raw tensor contents, each driven by the same
kind of client process (``bench/protocol_load.py``: requests written by hand on raw
sockets, one connection per concurrent request), on MobileNetV2 at concurrency 8 and the
MLP at 1, in rounds with the server's CPU time per request; the targets are judged on
per-round ratios (``bench/perf_analyzer.py`` does the same with Triton's C++ client).
Peers (``bench/peers.py``): MLServer, LitServe and Triton (through PyTriton), each
installed by the benchmark in its own virtual environment, serving the same SavedModels
through their signature, each answer checked against the direct call, each at its best
over its batching off and on (32 requests, 5 ms); the same bodies (``--peers`` picks some,
``--peers ''`` none). A peer that fails to install or start is named and the run fails.

Targets (issue 7): MLP at concurrency 1, p50 at most 0.3 ms above the direct call and at
most 0.6x MLServer's; MLP at concurrency 32, at least 1.5x MLServer's best; cold start at
most 1.2x the in-process equivalent and below every peer's. Issue 8: MobileNetV2 at
concurrency 8, gRPC raw at least 0.95x REST binary and 1.3x REST JSON; MLP at concurrency
1, gRPC p50 at most REST's. Exits 1 when a measured target is missed.
Figures taken while other work runs on the machine are noisy: the JSON records the load
average at start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import orjson

from environment import environment as recorded_environment
from peer_runs import PeerResults, direct_answers, failed_peers, peer_names, run_peers
from peers import PEERS, Batching, Peer, first_200, settle
from protocols import PROTOCOLS, protocol_cells, protocol_targets

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("mlp", "mobilenet_v2")
SHAPES = {"mlp": (784,), "mobilenet_v2": (224, 224, 3)}
CONCURRENCY = (1, 8, 32)
BODIES = 8
P50_ABOVE_DIRECT_MS = 0.3
COLD_START_VS_IN_PROCESS = 1.2
LUA = r"""
local bodies = {}
local i = 0
function init(args)
  for n, path in ipairs(args) do
    local f = assert(io.open(path, "rb")); bodies[n] = f:read("*a"); f:close()
  end
end
function request()
  i = i % #bodies + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, bodies[i])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\n", summary.requests, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50),
    latency:percentile(99), summary.duration))
end
"""


def inputs(model: str, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.random((1, *SHAPES[model]), dtype=np.float32) for _ in range(n)]


def v2_body(x: np.ndarray) -> bytes:
    tensor = {"name": "image", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel()}
    return orjson.dumps({"inputs": [tensor]}, option=orjson.OPT_SERIALIZE_NUMPY)


def write_bodies(work: Path) -> dict[str, list[Path]]:
    """``BODIES`` different v2 JSON bodies per model, written under ``work`` for wrk."""
    files: dict[str, list[Path]] = {}
    for model in MODELS:
        files[model] = []
        for i, x in enumerate(inputs(model, BODIES)):
            path = work / f"{model}-{i}.json"
            path.write_bytes(v2_body(x))
            files[model].append(path)
    return files


# ------------------------------------------------------------------ the limit


def direct(models_dir: Path, model: str, seconds: float) -> dict[int, dict[str, float]]:
    """The model called in-process through keepwarm.load, by c threads: req/s and p50."""
    import keepwarm

    loaded = keepwarm.load(str(models_dir / model))
    xs = inputs(model, BODIES)
    for x in xs:
        loaded.predict(x)
    out: dict[int, dict[str, float]] = {}

    def worker(k: int, stop: float, own: list[float]) -> None:
        i = k
        while (start := time.perf_counter()) < stop:
            loaded.predict(xs[i % BODIES])
            own.append(time.perf_counter() - start)
            i += 1

    for c in CONCURRENCY:
        stop = time.perf_counter() + seconds
        latencies: list[list[float]] = [[] for _ in range(c)]
        begun = time.perf_counter()
        with ThreadPoolExecutor(c) as pool:
            list(pool.map(worker, range(c), [stop] * c, latencies))
        took = time.perf_counter() - begun
        flat = np.concatenate([np.asarray(v) for v in latencies]) * 1000
        out[c] = {"rps": len(flat) / took, "p50_ms": float(np.percentile(flat, 50)),
                  "p99_ms": float(np.percentile(flat, 99))}  # fmt: skip
    return out


# ------------------------------------------------------------------ the server


class Served:
    name = "keepwarm"

    def __init__(
        self, repo: Path, *, env: dict[str, str] | None = None, extra: Sequence[str] = ()
    ) -> None:
        self.started = time.perf_counter()
        command = [sys.executable, "-m", "keepwarm", "serve", str(repo), "--port", "0"]
        self.proc = subprocess.Popen(
            [*command, "--grpc-port", "0", *extra],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.url = ""
        self.grpc = ""
        found = threading.Event()

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                match = re.search(r"REST  (http://\S+)", line)
                if match:
                    self.url = match.group(1)
                grpc_match = re.search(r"gRPC  (\S+:\d+)", line)
                if grpc_match:
                    self.grpc = grpc_match.group(1)
                if self.url and self.grpc:
                    found.set()
            found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(120) or not self.url:
            raise SystemExit("keepwarm serve did not start:\n" + "".join(self.lines))

    def infer_url(self, model: str) -> str:
        return f"{self.url}/v2/models/{model}/infer"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def wrk(
    url: str, bodies: Sequence[Path | str], c: int, seconds: float, script: Path
) -> dict[str, float]:
    """``wrk -t1 -c<c>`` rotating ``bodies`` (files, or what ``script`` reads from its args)."""
    done = subprocess.run(
        ["wrk", "-t1", f"-c{c}", f"-d{seconds:g}s", "--timeout", "10s", "-s", str(script),
         url, "--", *map(str, bodies)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    match = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", done.stdout)
    assert match, done.stdout + done.stderr
    requests_, status_errors, socket_errors, p50, p99, micros = map(int, match.groups())
    ok = requests_ - status_errors - socket_errors
    none = float("nan") if ok <= 0 else 1.0  # no answer, no latency (wrk would say 0 ms)
    return {"rps": ok / (micros / 1e6), "p50_ms": none * p50 / 1000,
            "p99_ms": none * p99 / 1000, "failed": status_errors + socket_errors}  # fmt: skip


def in_process_cold_start(models_dir: Path) -> float:
    """From spawn to both models answering, in a fresh process, without a server."""
    code = "import numpy as np, keepwarm\n" + "".join(
        f"keepwarm.load({str(models_dir / m)!r}).predict("
        f"np.zeros((1, *{SHAPES[m]!r}), np.float32))\n"
        for m in MODELS
    )
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - started


def drive_peers(
    names: list[str],
    repo: Path,
    files: dict[str, list[Path]],
    seconds: float,
    script: Path,
    workdir: Path,
) -> PeerResults:
    """Each model and concurrency through each peer, at its best over batching off and on
    (a cell per model and concurrency); cold start with batching off."""
    versions = {model: repo / model / "1" for model in MODELS}
    answers = direct_answers(repo, {model: inputs(model, 1)[0] for model in MODELS})
    checks = {model: (files[model][0].read_bytes(), answers[model]) for model in MODELS}

    def measure(peer: Peer) -> list[dict[str, Any]]:
        cells = []
        for model in MODELS:
            url = peer.infer_url(model)
            wrk(url, files[model], 1, 1.0, script)
            for c in CONCURRENCY:
                settle(peer, model, checks[model][0])
                cells.append({"model": model, "c": c, **wrk(url, files[model], c, seconds, script)})
        return cells

    return run_peers(names, versions, checks, workdir, (None, Batching(32, 5.0)), measure)


# ------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / "examples" / "models")
    parser.add_argument("--quick", action="store_true", help="2 s per cell instead of 10")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--peers", default=",".join(PEERS),
                        help=f"comma-separated, of {', '.join(PEERS)}; '' for none")  # fmt: skip
    args = parser.parse_args()
    names = peer_names(args.peers)
    if shutil.which("wrk") is None:
        raise SystemExit("bench/serve.py needs wrk (apt-get install wrk)")
    seconds = 2.0 if args.quick else 10.0
    load_before = os.getloadavg()[0]
    results: dict[str, Any] = {"cells": [], "targets": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        repo = tmp_path / "models"
        for model in MODELS:
            shutil.copytree(args.models / model, repo / model)
        script = tmp_path / "bodies.lua"
        script.write_text(LUA)
        files = write_bodies(tmp_path)
        cold_in_process = in_process_cold_start(repo)
        served = Served(repo)
        try:
            firsts = {m: files[m][0].read_bytes() for m in MODELS}
            cold_served = first_200(served, firsts)
            for model in MODELS:
                url = served.infer_url(model)
                wrk(url, files[model], 1, 1.0, script)  # warm the connection path
                for c in CONCURRENCY:
                    cell = {"model": model, "way": "keepwarm", "c": c,
                            **wrk(url, files[model], c, seconds, script)}  # fmt: skip
                    results["cells"].append(cell)
            results["cells"] += protocol_cells(served, seconds / 2, SHAPES)
        finally:
            served.stop()
        peers = drive_peers(names, repo, files, seconds, script, tmp_path)
        results["cells"] += peers.cells
        cold_peers = peers.cold_s
        for model in MODELS:
            for c, figures in direct(repo, model, seconds).items():
                results["cells"].append({"model": model, "way": "direct", "c": c, **figures})
    results["cold_start_s"] = {
        "keepwarm": cold_served, "in_process": cold_in_process, **cold_peers
    }  # fmt: skip

    def cell(model: str, way: str, c: int) -> dict[str, float]:
        return next(
            x for x in results["cells"] if (x["model"], x["way"], x["c"]) == (model, way, c)
        )

    served_p50 = cell("mlp", "keepwarm", 1)["p50_ms"]
    direct_p50 = cell("mlp", "direct", 1)["p50_ms"]
    results["targets"] = [
        {"target": f"MLP c=1 p50 <= direct + {P50_ABOVE_DIRECT_MS} ms",
         "value": f"{served_p50:.3f} ms vs {direct_p50:.3f} + {P50_ABOVE_DIRECT_MS}",
         "status": "PASS" if served_p50 <= direct_p50 + P50_ABOVE_DIRECT_MS else "FAIL"},
        {"target": f"cold start <= {COLD_START_VS_IN_PROCESS}x in-process",
         "value": f"{cold_served:.2f} s vs {cold_in_process:.2f} s",
         "status": "PASS" if cold_served <= COLD_START_VS_IN_PROCESS * cold_in_process
         else "FAIL"},
    ]  # fmt: skip
    results["targets"] += protocol_targets(cell, "protocol_load.py, medians of rounds")
    served_rps = cell("mlp", "keepwarm", 32)["rps"]
    if "mlserver" in cold_peers:
        peer_p50 = cell("mlp", "mlserver", 1)["p50_ms"]
        peer_rps = cell("mlp", "mlserver", 32)["rps"]
        results["targets"] += [
            {"target": "MLP c=1 p50 <= 0.6x MLServer's",
             "value": f"{served_p50:.3f} ms vs 0.6 x {peer_p50:.3f}",
             "status": "PASS" if served_p50 <= 0.6 * peer_p50 else "FAIL"},
            {"target": "MLP c=32 req/s >= 1.5x MLServer's best",
             "value": f"{served_rps:.0f} vs 1.5 x {peer_rps:.0f}",
             "status": "PASS" if served_rps >= 1.5 * peer_rps else "FAIL"},
        ]  # fmt: skip
    for peer, peer_cold in cold_peers.items():
        results["targets"].append(
            {"target": f"cold start below {peer}'s",
             "value": f"{cold_served:.2f} s vs {peer_cold:.2f} s",
             "status": "PASS" if cold_served < peer_cold else "FAIL"}
        )  # fmt: skip
    results["targets"] += failed_peers(peers)
    results["failed_requests"] = sum(
        x.get("failed", 0) for x in results["cells"] if x["way"] in ("keepwarm", *PROTOCOLS)
    )
    results["loadavg"] = {"start": load_before, "end": os.getloadavg()[0]}
    print(f"{'model':14s}{'way':13s}{'c':>4s}{'req/s':>10s}{'p50 ms':>9s}{'p99 ms':>9s}  batching")
    for x in results["cells"]:
        print(f"{x['model']:14s}{x['way']:13s}{x['c']:4d}{x['rps']:10.0f}"
              f"{x['p50_ms']:9.3f}{x['p99_ms']:9.3f}  {x.get('config', '')}")  # fmt: skip
    colds = results["cold_start_s"].items()
    print("cold start (s): " + ", ".join(f"{way} {took:.2f}" for way, took in colds))
    for t in results["targets"]:
        print(f"{t['status']:8s}{t['target']}: {t['value']}")
    print(f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} (noisy when high)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"environment": recorded_environment(args, ["tensorflow", "uvicorn", "grpcio"]),
                   **results, "peers_failed": peers.failed}  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=2))
    failed = results["failed_requests"] > 0 or any(
        t["status"] == "FAIL" for t in results["targets"]
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
