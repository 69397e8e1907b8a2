"""Client deadlines and cancellation reach the server: a gRPC request that is still queued
(every worker busy) when its deadline passes, or when the client cancels it, never runs.

The gRPC server runs in this process (started from its own event loop thread) so that the
test can hold the model's workers with a gate and read the in-flight gauge."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from tritonclient.grpc import (
    service_pb2,
    service_pb2_grpc,
)

from keepwarm.grpc.server import NOT_SERVING, SERVING, GrpcServer
from keepwarm.service import DEFAULT_WORKERS, InferenceService
from support.gated_model import GATE_TIMEOUT_S, Gate, gated_leases, gated_repository
from support.waiting import wait_until


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[tuple[Any, InferenceService]]:
    Gate.reset()
    repository = gated_repository(tmp_path)
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

    def counted(code: str) -> float:
        labels = {"model": "", "version": "", "protocol": "v2-grpc", "code": code}
        return service.metrics.registry.get_sample_value("keepwarm_requests_total", labels) or 0

    # The late and the cancelled request, never as OK (the late one as CANCELLED or as
    # DEADLINE_EXCEEDED: the server's own deadline and gRPC's end of the call race).
    assert counted("CANCELLED") + counted("DEADLINE_EXCEEDED") == 2
    assert counted("CANCELLED") >= 1


@pytest.fixture
def batched(tmp_path: Path) -> Iterator[InferenceService]:
    """``gated`` with batching on: one row a batch, two batches at once (two slots)."""
    Gate.reset()
    Gate.open.set()  # the buckets' warmup at load runs through
    repository = gated_repository(
        tmp_path,
        "[warmup]\nruns = 0\n\n[batching]\nmax_batch_size = 1\nmax_delay_ms = 0\nrun_alone = 2\n",
    )
    Gate.reset()
    service = InferenceService(repository)
    try:
        yield service
    finally:
        Gate.open.set()
        service.close()
        repository.close()


def test_a_call_cancelled_while_its_request_is_decoded_leaves_the_queue(
    batched: InferenceService,
) -> None:
    """gRPC cancels the handler's task when its client cancels: if that happens while the
    request is decoded and queued on a worker thread, the request still leaves the queue
    unrun and lets go of its lease."""
    service = batched
    decoding, proceed = threading.Event(), threading.Event()

    def decoder(value: float, hold: bool) -> Any:
        def decode(signature: Any) -> dict[str, np.ndarray]:
            if hold:
                decoding.set()
                assert proceed.wait(GATE_TIMEOUT_S)
            return {"x": np.full((1, 4), value, np.float32)}

        return decode

    def infer(value: float, hold: bool = False) -> asyncio.Future[Any]:
        call = service.infer(
            "gated", None, decoder(value, hold), lambda *answer: answer, protocol="test"
        )
        return asyncio.ensure_future(call)

    def leases() -> int:
        return gated_leases(service)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        holders = [infer(1.0), infer(2.0)]
        for _ in holders:  # both slots run a batch held by the gate
            assert await loop.run_in_executor(None, Gate.running.acquire, True, GATE_TIMEOUT_S)
        task = infer(3.0, hold=True)
        assert await loop.run_in_executor(None, decoding.wait, GATE_TIMEOUT_S)
        task.cancel()  # while its worker thread decodes it
        with pytest.raises(asyncio.CancelledError):
            await task
        proceed.set()  # the worker now queues it behind the held batches
        # It leaves the queue and lets go of its lease: only the holders' remain.
        assert await loop.run_in_executor(None, wait_until, lambda: leases() == 2, 10.0)
        Gate.open.set()
        for holder in holders:
            await holder
        await infer(4.0)

    asyncio.run(scenario())
    assert sorted(Gate.runs) == [1.0, 2.0, 4.0]  # 3 (cancelled) never ran


def test_health_turns_the_whole_server_serving_last_and_not_serving_first(
    tmp_path: Path,
) -> None:
    """A client that saw "" SERVING finds every service SERVING: "" is set last on the
    way up and first on the way down."""
    Gate.reset()
    repository = gated_repository(tmp_path)
    service = InferenceService(repository)
    try:
        server = GrpcServer(service, port=0)
        order: list[tuple[str, int]] = []
        real_set = server.health.set

        def recording_set(name: str, status: int) -> None:
            order.append((name, status))
            real_set(name, status)

        server.health.set = recording_set  # type: ignore[method-assign]
        service.started()
        server._sync_health()
        names = [name for name, _ in order]
        assert names[-1] == "" and len(names) == 4, order
        assert {status for _, status in order} == {SERVING}
        order.clear()

        async def drain() -> None:  # shutdown begins on the event loop
            service.begin_shutdown()

        asyncio.run(drain())
        server._sync_health()
        assert order[0][0] == "" and len(order) == 4, order
        assert {status for _, status in order} == {NOT_SERVING}
    finally:
        service.close()
        repository.close()
