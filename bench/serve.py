"""The server against its limit: ``keepwarm serve`` over HTTP versus the same model called
in-process (the limit, measured in the same run), on the MLP and MobileNetV2 example
SavedModels, at concurrency 1, 8 and 32; and the cold start, from ``keepwarm serve`` to the
first 200 on both models, against the same imports, loads and warmups done in-process
(``bench/cold_start.py``: ``--cold-rounds`` starts of each way taken in turn, medians;
``--cold-start-only`` measures only those).

The load generator (``bench/wrk_load.py``) is ``wrk -t1`` in its own process (``apt-get
install wrk``), with a Lua script that rotates several different KServe v2 JSON bodies and
counts only 2xx answers.
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

Targets (issue 7): MLP at concurrency 1, p50 at most 0.3 ms above the direct call (judged on
``--c1-rounds`` rounds alternating the direct call with the served MLP, 2 s a side, 1 s with
``--quick``: ``bench/c1_rounds.py``; the single-run cells stay beside it, not judged) and at
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
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

import c1_rounds
import cold_start
from environment import environment as recorded_environment
from peer_runs import PeerResults, direct_answers, failed_peers, peer_names, run_peers
from peers import PEERS, Batching, Peer, first_200, settle
from protocols import PROTOCOLS, protocol_cells, protocol_targets
from served import MODELS, SHAPES, Served, inputs, v2_body
from wrk_load import BODIES, LUA, write_bodies, wrk

__all__ = [
    "BODIES", "LUA", "MODELS", "ROOT", "Served", "inputs", "v2_body", "write_bodies", "wrk",
]  # fmt: skip

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = (1, 8, 32)


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


def drive_peers(
    names: list[str],
    repo: Path,
    files: dict[str, list[Path]],
    seconds: float,
    script: Path,
    workdir: Path,
    answers: dict[str, np.ndarray],
) -> PeerResults:
    """Each model and concurrency through each peer, at its best over batching off and on
    (a cell per model and concurrency); ``answers``: the direct call's, to check theirs."""
    versions = {model: repo / model / "1" for model in MODELS}
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
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help=f"comma-separated, of {', '.join(PEERS)}; '' for none",
    )
    parser.add_argument(
        "--cold-start-only",
        action="store_true",
        help="only the cold starts (keepwarm, in-process, the peers)",
    )
    parser.add_argument(
        "--cold-rounds",
        type=int,
        default=3,
        help="cold starts of each way, taken in turn (default 3; medians)",
    )
    parser.add_argument(
        "--c1-rounds",
        type=int,
        default=5,
        help="MLP c=1 rounds alternating the direct call and the server (default 5)",
    )
    args = parser.parse_args()  # fmt: skip
    names = peer_names(args.peers)
    if args.cold_rounds < 1 or args.c1_rounds < 1:
        raise SystemExit("--cold-rounds and --c1-rounds must be at least 1")
    if shutil.which("wrk") is None and not args.cold_start_only:
        raise SystemExit("bench/serve.py needs wrk (apt-get install wrk)")
    seconds = 2.0 if args.quick else 10.0
    load_before = os.getloadavg()[0]
    results: dict[str, Any] = {"cells": [], "targets": [], "c1_rounds": {}}
    peers = PeerResults()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        repo = tmp_path / "models"
        for model in MODELS:
            shutil.copytree(args.models / model, repo / model)
        files = write_bodies(tmp_path)
        firsts = {m: files[m][0].read_bytes() for m in MODELS}
        answers = direct_answers(repo, {model: inputs(model, 1)[0] for model in MODELS})
        colds, cold_cpu, peers.failed = cold_start.cold_starts(
            repo, firsts, names, args.cold_rounds, tmp_path, answers
        )
        if not args.cold_start_only:
            script = tmp_path / "bodies.lua"
            script.write_text(LUA)
            cells, results["c1_rounds"] = served_cells(
                repo, files, firsts, seconds, script, args.c1_rounds
            )
            results["cells"] += cells
            failed = peers.failed
            peers = drive_peers(
                [n for n in names if n not in failed], repo, files, seconds, script, tmp_path,
                answers,
            )  # fmt: skip
            peers.failed.update(failed)
            results["cells"] += peers.cells
            for model in MODELS:
                for c, figures in direct(repo, model, seconds).items():
                    results["cells"].append({"model": model, "way": "direct", "c": c, **figures})
    results["cold_start_s"] = cold_start.medians(colds)
    results["cold_start_rounds_s"] = colds
    results["cold_start_cpu_s"] = cold_cpu
    if results["cells"]:
        results["targets"] += throughput_targets(results["cells"], peers, results["c1_rounds"])
    results["targets"] += cold_start.targets(colds)
    results["targets"] += failed_peers(peers)
    results["failed_requests"] = sum(
        x.get("failed", 0) for x in results["cells"] if x["way"] in ("keepwarm", *PROTOCOLS)
    ) + sum(x["failed"] for x in results["c1_rounds"].get("served", []))
    results["loadavg"] = {"start": load_before, "end": os.getloadavg()[0]}
    if results["cells"]:
        print(f"{'model':14s}{'way':13s}{'c':>4s}{'req/s':>10s}{'p50 ms':>9s}{'p99 ms':>9s}  "
              "batching")  # fmt: skip
    for x in results["cells"]:
        print(f"{x['model']:14s}{x['way']:13s}{x['c']:4d}{x['rps']:10.0f}"
              f"{x['p50_ms']:9.3f}{x['p99_ms']:9.3f}  {x.get('config', '')}")  # fmt: skip
    if results["c1_rounds"]:
        print(c1_rounds.table(results["c1_rounds"]))
    print(cold_start.table(colds, cold_cpu))
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


def served_cells(
    repo: Path,
    files: dict[str, list[Path]],
    firsts: dict[str, bytes],
    seconds: float,
    script: Path,
    rounds: int,
) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, float]]]]:
    """``keepwarm serve``: each model at each concurrency through wrk, then the protocols;
    then ``rounds`` MLP c=1 rounds alternating it with the direct call (2 s a side; 1 s
    when a cell is 2 s, ``--quick``: wrk takes whole seconds)."""
    cells = []
    served = Served(repo)
    try:
        first_200(served, firsts)
        served.until_warm()  # measured warm, as the peers are
        for model in MODELS:
            url = served.infer_url(model)
            wrk(url, files[model], 1, 1.0, script)  # warm the connection path
            for c in CONCURRENCY:
                cells.append({"model": model, "way": "keepwarm", "c": c,
                              **wrk(url, files[model], c, seconds, script)})  # fmt: skip
        cells += protocol_cells(served, seconds / 2, SHAPES)
        found = c1_rounds.measure_rounds(
            served, repo, files["mlp"], script, max(1.0, seconds // 5), rounds
        )
    finally:
        served.stop()
    return cells, found


def throughput_targets(
    cells: list[dict[str, Any]], peers: PeerResults, rounds: c1_rounds.Rounds
) -> list[dict[str, str]]:
    """Issue 7's MLP targets (against the direct call, on ``rounds``, and MLServer) and
    issue 8's."""

    def cell(model: str, way: str, c: int) -> dict[str, Any]:
        return next(x for x in cells if (x["model"], x["way"], x["c"]) == (model, way, c))

    served_p50 = cell("mlp", "keepwarm", 1)["p50_ms"]
    direct_p50 = cell("mlp", "direct", 1)["p50_ms"]
    targets = [c1_rounds.target(rounds, (served_p50, direct_p50))]
    targets += protocol_targets(cell, "protocol_load.py, medians of rounds")
    served_rps = cell("mlp", "keepwarm", 32)["rps"]
    if "mlserver" in peers.cold_s:
        peer_p50 = cell("mlp", "mlserver", 1)["p50_ms"]
        peer_rps = cell("mlp", "mlserver", 32)["rps"]
        targets += [
            {"target": "MLP c=1 p50 <= 0.6x MLServer's",
             "value": f"{served_p50:.3f} ms vs 0.6 x {peer_p50:.3f}",
             "status": "PASS" if served_p50 <= 0.6 * peer_p50 else "FAIL"},
            {"target": "MLP c=32 req/s >= 1.5x MLServer's best",
             "value": f"{served_rps:.0f} vs 1.5 x {peer_rps:.0f}",
             "status": "PASS" if served_rps >= 1.5 * peer_rps else "FAIL"},
        ]  # fmt: skip
    return targets


if __name__ == "__main__":
    sys.exit(main())
