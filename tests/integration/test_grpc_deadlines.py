"""Client deadlines and cancellation reach the server: a gRPC request that is still queued
(every worker busy) when its deadline passes, or when the client cancels it, never runs.

The gRPC server runs in this process (its own event loop thread) so that the test can hold
the model's workers with a gate and read the in-flight gauge."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from keepwarm.grpc.server import GrpcServer
from keepwarm.repository import Repository
from keepwarm.service import DEFAULT_WORKERS, InferenceService
from support.gated_model import GATE_TIMEOUT_S, Gate
from support.repo_builders import place
from support.waiting import wait_until

service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
from tritonclient.grpc import service_pb2_grpc  # noqa: E402

GATED = {"keepwarm.toml": '[python]\nclass = "support.gated_model:GatedEcho"\n'}


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[tuple[Any, InferenceService]]:
    Gate.reset()
    place(tmp_path / "gated", 1, files=GATED)
    (tmp_path / "gated" / "model.toml").write_text("[warmup]\nruns = 0\n")
    repository = Repository(tmp_path, allow_unsafe=True)
    repository.start()
    repository.wait_ready("gated", timeout=GATE_TIMEOUT_S)
    service = InferenceService(repository)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> GrpcServer:
        server = GrpcServer(service, port=0)
        await server.start()
        await server.follow_readiness()
        return server

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(GATE_TIMEOUT_S)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel), service
    finally:
        Gate.open.set()
        channel.close()
        asyncio.run_coroutine_threadsafe(server.stop(5), loop).result(GATE_TIMEOUT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(GATE_TIMEOUT_S)
        loop.close()
        service.close()
        repository.close()


def request(marker: float) -> Any:
    message = service_pb2.ModelInferRequest(model_name="gated")
    message.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    message.raw_input_contents.append(np.full((1, 4), marker, np.float32).tobytes())
    return message


def test_queued_requests_past_their_deadline_or_cancelled_never_run(
    gated: tuple[Any, InferenceService],
) -> None:
    stub, service = gated

    def in_flight() -> float:
        return service.metrics.registry.get_sample_value("keepwarm_requests_in_flight") or 0.0

    busy = [stub.ModelInfer.future(request(i), timeout=60) for i in range(DEFAULT_WORKERS)]
    for _ in busy:  # every worker thread is inside predict, held by the gate
        assert Gate.running.acquire(timeout=GATE_TIMEOUT_S)

    late = stub.ModelInfer.future(request(100.0), timeout=1.0)
    assert wait_until(lambda: in_flight() == DEFAULT_WORKERS + 1)
    with pytest.raises(grpc.RpcError) as caught:
        late.result(timeout=GATE_TIMEOUT_S)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert wait_until(lambda: in_flight() == DEFAULT_WORKERS)

    cancelled = stub.ModelInfer.future(request(200.0), timeout=60)
    assert wait_until(lambda: in_flight() == DEFAULT_WORKERS + 1)
    assert cancelled.cancel()
    assert wait_until(lambda: in_flight() == DEFAULT_WORKERS)

    Gate.open.set()
    for future in busy:
        assert future.result(timeout=GATE_TIMEOUT_S).model_name == "gated"
    stub.ModelInfer(request(300.0), timeout=GATE_TIMEOUT_S)  # queued after anything left
    assert sorted(Gate.runs) == [*map(float, range(DEFAULT_WORKERS)), 300.0]
    counted = service.metrics.registry.get_sample_value(
        "keepwarm_requests_total",
        {"model": "", "version": "", "protocol": "v2-grpc", "code": "CANCELLED"},
    )
    assert counted == 2  # the late and the cancelled request, never as OK
