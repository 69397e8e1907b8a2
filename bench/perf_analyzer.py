"""keepwarm driven by Triton's ``perf_analyzer``: one C++ client, the same for every
protocol, so that REST and gRPC are measured the same way (issue 8).

``keepwarm serve`` on the example MLP and MobileNetV2; ``perf_analyzer`` over REST with
the binary tensor extension (``rest-binary``), REST with JSON (``rest-json``) and gRPC
(``grpc-raw``: ``raw_input_contents``), at concurrency 1 and 8, several rounds taken in
turn (the order rotating); each cell's figures are the median over the rounds (with the
spread), the server's CPU time per request among them (from ``/proc``: the figure other
work on the machine disturbs least); targets are judged on per-round ratios. The inputs
are a few different random tensors (a perf_analyzer data file: its own random data are
random bytes, NaN included, which no JSON can carry).

perf_analyzer is installed here, never by ``make test``: ``bench/.venvs/perf_analyzer``
gets the ``tritonclient==2.41.1`` wheel (the last one that ships the binary) and the CUDA
runtime library it links against; it also needs Debian's ``libb64-0d`` (installed with
apt-get when missing and run as root). It reads keepwarm's model metadata, config and
statistics endpoints (the statistics must count every request in ``queue`` and in each
``compute_*`` stage).

Targets (issue 8): MLP at concurrency 1, gRPC p50 at most REST binary's; MobileNetV2 at
concurrency 8, gRPC at least 0.95x REST binary's and 1.3x REST JSON's throughput. Exits 1
when one is missed. Figures taken while other work runs on the machine are noisy: compare
only the ratios of one run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from environment import environment as recorded_environment
from peers import VENVS, first_200, venv
from proc_stats import tree_cpu_seconds
from protocols import answered, median_cell, protocol_targets
from serve import MODELS, Served, inputs, v2_body

PINS = ("tritonclient==2.41.1", "nvidia-cuda-runtime-cu12==12.9.79")
WAYS = {
    "rest-binary": ("-i", "http"),
    "rest-json": ("-i", "http", "--input-tensor-format", "json", "--output-tensor-format", "json"),
    "grpc-raw": ("-i", "grpc"),
}
CELLS = (("mlp", 1), ("mlp", 8), ("mobilenet_v2", 1), ("mobilenet_v2", 8))
STAGES = ("Input", "Infer", "Output")
FIGURES = ("rps", "p50_ms", "p99_ms", "server_queue_ms", "server_compute_ms", "server_cpu_us")
DATA_ROWS = {"mlp": 8, "mobilenet_v2": 4}
ROOT = Path(__file__).resolve().parents[1]


def install() -> tuple[Path, dict[str, str]]:
    """The perf_analyzer binary and the environment it runs in."""
    if (
        "libb64.so.0d"
        not in subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    ):
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise SystemExit("perf_analyzer needs libb64.so.0d: apt-get install libb64-0d")
        subprocess.run(["apt-get", "install", "-y", "-q", "libb64-0d"], check=True)
    env_dir = venv("perf_analyzer", PINS)
    binary = env_dir / "bin" / "perf_analyzer"
    cudart = sorted(env_dir.glob("lib/python*/site-packages/nvidia/cuda_runtime/lib"))
    if not binary.exists() or not cudart:
        raise SystemExit(f"{VENVS / 'perf_analyzer'}: no perf_analyzer or CUDA runtime in it")
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(cudart[0]), env.get("LD_LIBRARY_PATH", "")) if p
    )
    return binary, env


def data_file(work: Path, model: str) -> Path:
    """A perf_analyzer input-data file: ``DATA_ROWS`` different random inputs."""
    path = work / f"{model}-input.json"
    rows = [
        {"image": {"content": np.round(x.ravel(), 6).tolist(), "shape": list(x.shape)}}
        for x in inputs(model, DATA_ROWS[model])
    ]
    path.write_text(json.dumps({"data": rows}))
    return path


def measure(
    binary: Path, env: dict[str, str], address: str, model: str, way: str, c: int,
    data: Path, interval_ms: int, work: Path,
) -> dict[str, float]:  # fmt: skip
    """One perf_analyzer run (its stability check off: the rounds give the spread)."""
    report = work / "report.csv"
    report.unlink(missing_ok=True)
    command = [
        str(binary), "-m", model, "-u", address, *WAYS[way], "--input-data", str(data),
        "--concurrency-range", str(c), "--measurement-interval", str(interval_ms),
        "-s", "1000", "-f", str(report),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0 or not report.exists():
        raise SystemExit(f"perf_analyzer failed ({' '.join(command)}):\n{done.stdout}{done.stderr}")
    with report.open() as f:
        row = next(csv.DictReader(f))
    return {
        "rps": float(row["Inferences/Second"]),
        "p50_ms": float(row["p50 latency"]) / 1000,
        "p99_ms": float(row["p99 latency"]) / 1000,
        "server_queue_ms": float(row["Server Queue"]) / 1000,
        "server_compute_ms": sum(float(row[f"Server Compute {k}"]) for k in STAGES) / 1000,
    }  # fmt: skip


def median_cells(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cells = []
    for model, c in CELLS:
        for way in WAYS:
            mine = [r for r in runs if (r["model"], r["way"], r["c"]) == (model, way, c)]
            cells.append({**median_cell(mine, FIGURES), "model": model, "way": way, "c": c})
    return cells


def targets(cells: list[dict[str, Any]]) -> list[dict[str, str]]:
    def cell(model: str, way: str, c: int) -> dict[str, Any]:
        return next(x for x in cells if (x["model"], x["way"], x["c"]) == (model, way, c))

    return protocol_targets(cell, "perf_analyzer, medians of rounds")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / "examples" / "models")
    parser.add_argument("--quick", action="store_true", help="1 s windows instead of 3 s")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every cell, in turn")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    binary, env = install()
    interval_ms = 1000 if args.quick else 3000
    load_before = os.getloadavg()[0]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repo = work / "models"
        for model in MODELS:
            shutil.copytree(args.models / model, repo / model)
        data = {model: data_file(work, model) for model in MODELS}
        served = Served(repo)
        try:
            first_200(served, {m: v2_body(inputs(m, 1)[0]) for m in MODELS})
            rest = served.url.split("://", 1)[1]
            ways = list(WAYS)
            for round_ in range(args.rounds):
                turn = round_ % len(ways)  # the order rotates: no protocol always goes first
                for model, c in CELLS:
                    for way in ways[turn:] + ways[:turn]:
                        address = served.grpc if way == "grpc-raw" else rest
                        count, cpu = answered(served.url, model), tree_cpu_seconds(served.proc.pid)
                        figures = measure(binary, env, address, model, way, c, data[model],
                                          interval_ms, work)  # fmt: skip
                        used = tree_cpu_seconds(served.proc.pid) - cpu
                        count = answered(served.url, model) - count
                        figures["server_cpu_us"] = used / max(1, count) * 1e6
                        runs.append({"model": model, "way": way, "c": c, **figures})
        finally:
            served.stop()
    cells = median_cells(runs)
    checks = targets(cells)
    print(f"{'model':14s}{'way':13s}{'c':>3s}{'req/s':>9s}{'p50 ms':>9s}{'p99 ms':>9s}"
          f"{'queue':>8s}{'compute':>9s}{'CPU us':>8s}  p50 range (ms)")  # fmt: skip
    for x in cells:
        low, high = x["p50_ms_range"]
        print(f"{x['model']:14s}{x['way']:13s}{x['c']:3d}{x['rps']:9.0f}{x['p50_ms']:9.3f}"
              f"{x['p99_ms']:9.3f}{x['server_queue_ms']:8.3f}{x['server_compute_ms']:9.3f}"
              f"{x['server_cpu_us']:8.0f}"
              f"  {low:.3f}-{high:.3f}")  # fmt: skip
    for t in checks:
        print(f"{t['status']:8s}{t['target']}: {t['value']}")
    load_after = os.getloadavg()[0]
    print(f"load average {load_before:.1f} -> {load_after:.1f} (noisy when high); "
          f"medians of {args.rounds} rounds")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "environment": recorded_environment(args, ["grpcio", "uvicorn", "tensorflow"]),
            "cells": cells, "runs": runs, "targets": checks,
            "loadavg": {"start": load_before, "end": load_after},
        }  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=2))
    return 1 if any(t["status"] == "FAIL" for t in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
