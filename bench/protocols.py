"""Issue 8's protocol cells: REST JSON, REST with the binary tensor extension and gRPC with
raw contents against one ``keepwarm serve``, measured so that the comparison survives a
shared machine whose speed drifts within minutes.

Each protocol is driven by the same kind of client process (``bench/protocol_load.py``:
requests written by hand on raw sockets, one connection per concurrent request), rounds
taken in turn with the order rotating, so that a burst of other work hits every protocol
alike. Each run also records the server's CPU time per answered request (from ``/proc``,
the figure other work disturbs least) and the client's. A cell holds the medians of its
rounds; a target compares the median of its per-round ratios (each round's protocols ran
minutes apart at most), not ratios of medians taken at different times.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from proc_stats import tree_cpu_seconds

PROTOCOLS = ("rest-json", "rest-binary", "grpc-raw")
PROTOCOL_CELLS = (("mobilenet_v2", 8), ("mlp", 1))
PROTOCOL_ROUNDS = 5
FIGURES = ("rps", "p50_ms", "p99_ms", "server_cpu_us", "client_cpu_us")


def answered(rest_url: str, model: str) -> int:
    """Requests ``model`` answered with success so far (Triton's statistics extension)."""
    with urllib.request.urlopen(f"{rest_url}/v2/models/{model}/stats", timeout=30) as reply:
        stats = json.load(reply)
    return sum(int(row["inference_stats"]["success"]["count"]) for row in stats["model_stats"])


def protocol_cells(
    served: Any, seconds: float, shapes: dict[str, tuple[int, ...]]
) -> list[dict[str, Any]]:
    """The cells of ``PROTOCOL_CELLS`` x ``PROTOCOLS`` on ``served`` (a ``serve.Served``),
    ``PROTOCOL_ROUNDS`` rounds of ``seconds`` each; every cell keeps its rounds."""
    runs: dict[tuple[str, str, int], list[dict[str, float]]] = {}
    for round_ in range(PROTOCOL_ROUNDS):
        turn = round_ % len(PROTOCOLS)
        for model, c in PROTOCOL_CELLS:
            for protocol in PROTOCOLS[turn:] + PROTOCOLS[:turn]:
                address = served.grpc if protocol == "grpc-raw" else served.url.split("://")[1]
                shape = ",".join(map(str, shapes[model]))
                cpu = tree_cpu_seconds(served.proc.pid)
                done = subprocess.run(
                    [sys.executable, str(Path(__file__).with_name("protocol_load.py")),
                     protocol, address, model, "image", shape, "-c", str(c),
                     "--seconds", f"{seconds:g}"],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                figures = json.loads(done.stdout.strip().splitlines()[-1])
                used = tree_cpu_seconds(served.proc.pid) - cpu
                figures["server_cpu_us"] = used / max(1, figures["ok"]) * 1e6
                runs.setdefault((model, protocol, c), []).append(figures)
    return [
        {**median_cell(rounds, FIGURES), "model": model, "way": protocol, "c": c,
         "failed": sum(r["failed"] for r in rounds)}
        for (model, protocol, c), rounds in runs.items()
    ]  # fmt: skip


def median_cell(rounds: Sequence[dict[str, float]], keys: Sequence[str]) -> dict[str, Any]:
    """Per key the median of ``rounds`` and their range; the rounds themselves too."""
    cell: dict[str, Any] = {"rounds": list(rounds)}
    for key in keys:
        values = [r[key] for r in rounds if key in r]
        if values:
            cell[key] = statistics.median(values)
            cell[key + "_range"] = [min(values), max(values)]
    return cell


def per_round(a: dict[str, Any], b: dict[str, Any], key: str, how: Callable[..., float]) -> float:
    """The median over rounds of ``how(a's value, b's value)`` (rounds paired in order)."""
    return statistics.median(
        how(x[key], y[key]) for x, y in zip(a["rounds"], b["rounds"], strict=False)
    )


def protocol_targets(
    cell: Callable[[str, str, int], dict[str, Any]], how: str
) -> list[dict[str, str]]:
    """Issue 8's targets over cells ``cell(model, way, c)`` measured ``how``, each judged
    on the median of its per-round ratios (or differences)."""
    grpc_mn = cell("mobilenet_v2", "grpc-raw", 8)
    binary_mn = cell("mobilenet_v2", "rest-binary", 8)
    json_mn = cell("mobilenet_v2", "rest-json", 8)
    grpc_mlp = cell("mlp", "grpc-raw", 1)
    rest_mlp = cell("mlp", "rest-binary", 1)
    vs_binary = per_round(grpc_mn, binary_mn, "rps", lambda g, r: g / r)
    vs_json = per_round(grpc_mn, json_mn, "rps", lambda g, r: g / r)
    p50_gap = per_round(grpc_mlp, rest_mlp, "p50_ms", lambda g, r: g - r)

    def cpu(a: dict[str, Any], b: dict[str, Any]) -> str:
        if "server_cpu_us" not in a or "server_cpu_us" not in b:
            return ""
        return f"; server CPU {a['server_cpu_us']:.0f} vs {b['server_cpu_us']:.0f} us/request"

    return [
        {"target": f"MobileNetV2 c=8 gRPC raw >= 0.95x REST binary ({how})",
         "value": f"{grpc_mn['rps']:.1f} vs {binary_mn['rps']:.1f} req/s, "
                  f"{vs_binary:.2f}x per round{cpu(grpc_mn, binary_mn)}",
         "status": "PASS" if vs_binary >= 0.95 else "FAIL"},
        {"target": f"MobileNetV2 c=8 gRPC raw >= 1.3x REST JSON ({how})",
         "value": f"{grpc_mn['rps']:.1f} vs {json_mn['rps']:.1f} req/s, "
                  f"{vs_json:.2f}x per round",
         "status": "PASS" if vs_json >= 1.3 else "FAIL"},
        {"target": f"MLP c=1 gRPC p50 <= REST binary p50 ({how})",
         "value": f"{grpc_mlp['p50_ms']:.3f} vs {rest_mlp['p50_ms']:.3f} ms, "
                  f"{p50_gap:+.3f} ms per round{cpu(grpc_mlp, rest_mlp)}",
         "status": "PASS" if p50_gap <= 0 else "FAIL"},
    ]  # fmt: skip
