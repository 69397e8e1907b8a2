"""The HTTP load generator of the REST benches: ``wrk -t1`` in its own process
(``apt-get install wrk``), with a Lua script (``LUA``) that rotates several different
request bodies (``write_bodies``: ``BODIES`` KServe v2 JSON bodies per model) and counts
only 2xx answers; ``wrk`` runs it and reads its one ``RESULT`` line."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from served import MODELS, inputs, v2_body

BODIES = 8
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
