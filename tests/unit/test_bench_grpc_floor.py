"""``bench/grpc_empty.py`` (grpcio's floor: an empty ServerLive, threaded and aio) driven by
``bench/protocol_load.py``'s ``grpc-live`` client, as ``bench/grpc_ab.py --empty`` runs
them: calls answered count, a method the server lacks counts as failed."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module", params=["sync", "aio-uvloop"])
def empty_server(request: pytest.FixtureRequest) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / "grpc_empty.py"), request.param, "2"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    with proc, proc.stdout:
        try:
            yield f"127.0.0.1:{int(proc.stdout.readline())}"
        finally:
            proc.terminate()


def load(protocol: str, address: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, str(BENCH / "protocol_load.py"), protocol, address, "m", "x", "4",
         "--seconds", "0.3"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def test_the_liveness_client_counts_answers_from_the_empty_server(empty_server: str) -> None:
    figures = load("grpc-live", empty_server)
    assert figures["ok"] > 0
    assert figures["failed"] == 0
    assert 0 < figures["p50_ms"] <= figures["p99_ms"]


def test_a_method_the_server_lacks_is_counted_as_failed(empty_server: str) -> None:
    figures = load("grpc-raw", empty_server)  # ModelInfer: UNIMPLEMENTED there
    assert figures["ok"] == 0
    assert figures["failed"] > 0
