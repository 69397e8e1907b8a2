"""Overload control over gRPC, through the real server process: past a model's queue bound
a request gets UNAVAILABLE at once (with the retry pushback) and the server recovers; a
request whose client cancels it, or whose deadline passes, while it waits for its batch
leaves the queue and is never run (the model logs every row it runs). Both ModelInfer
(KServe v2) and Predict (TF Serving) are driven.

The model is held by a FIFO gate (``support.batch_server_models``): two held batches fill
its two slots, so that the next requests queue."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from keepwarm.grpc.protos.inference import grpc_service_pb2, grpc_service_pb2_grpc
from keepwarm.grpc.protos.tensorflow_serving.apis import (
    predict_pb2,
    prediction_service_pb2_grpc,
)
from keepwarm.protocol import tensorproto
from support.batch_server_models import Gate, metric, place_logged_model, ran
from support.server_process import ServerProcess
from support.waiting import wait_until

MAX_QUEUE = 2
WAIT_S = 60.0


@pytest.fixture(scope="module")
def held_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Gate, Path]]:
    folder = tmp_path_factory.mktemp("grpc-overload")
    gate = Gate(folder)
    log = folder / "ran.log"
    batching = f"max_batch_size = 1\nmax_queue = {MAX_QUEUE}\nmax_delay_ms = 0\nrun_alone = 2\n"
    place_logged_model(folder / "models" / "gated", gate, log, delay=0, batching=batching)
    server = ServerProcess(folder / "models", "--allow-unsafe")
    channel = grpc.insecure_channel(server.grpc_address)
    try:
        yield (server, channel), gate, log
    finally:
        channel.close()
        server.stop()
        gate.close()


def _v2(value: float) -> Any:
    message = grpc_service_pb2.ModelInferRequest(model_name="gated")
    message.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    message.raw_input_contents.append(np.array([[value, 0]], np.float32).tobytes())
    return message


def _predict(value: float) -> Any:
    message = predict_pb2.PredictRequest()
    message.model_spec.name = "gated"
    x = np.array([[value, 0]], np.float32)
    message.inputs["x"].CopyFrom(tensorproto.from_numpy(x, name="x"))
    return message


Call = Callable[[float], Any]  # a marker value -> a grpc future of the model's answer


def _calls(channel: grpc.Channel, timeout: float | None = WAIT_S) -> dict[str, Call]:
    kserve = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
    tfs = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return {
        "ModelInfer": lambda v: kserve.ModelInfer.future(_v2(v), timeout=timeout),
        "Predict": lambda v: tfs.Predict.future(_predict(v), timeout=timeout),
    }


def _queued(server: ServerProcess) -> float:
    return metric(server, "keepwarm_batch_queue_depth", model="gated")


def _outcome(server: ServerProcess, outcome: str) -> float:
    """How many of the model's requests ended with ``outcome`` in its batcher."""
    return metric(server, "keepwarm_batch_requests_total", model="gated", outcome=outcome)


def _in_flight(server: ServerProcess) -> float:
    """Requests the server is answering now (the holders, and any still waiting)."""
    return metric(server, "keepwarm_requests_in_flight")


@contextmanager
def _holding(channel: grpc.Channel, gate: Gate) -> Iterator[None]:
    """Both of the model's slots run a held batch (markers -1, -2) for the block."""
    call = _calls(channel)["ModelInfer"]
    holders = []
    for value in (-1.0, -2.0):
        holders.append(call(value))
        assert gate.entered(), "the model never started a holding batch"
    try:
        yield
    finally:
        for _ in holders:
            gate.release()
        for holder in holders:
            assert holder.result(timeout=WAIT_S).model_name == "gated"


@pytest.mark.parametrize("method", ["ModelInfer", "Predict"])
def test_past_the_queue_bound_unavailable_at_once_and_the_server_recovers(
    held_server: tuple[Any, Gate, Path], method: str
) -> None:
    (server, channel), gate, log = held_server
    call = _calls(channel)[method]
    before = _outcome(server, "rejected")
    with _holding(channel, gate):
        queued = [call(10.0 + i) for i in range(MAX_QUEUE)]
        assert wait_until(lambda: _queued(server) == MAX_QUEUE), "the requests never queued"
        refused = call(20.0)
        # Answered while the model is still held: the refusal waited for nothing.
        error = refused.exception(timeout=WAIT_S)
        assert isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.UNAVAILABLE
        assert "overloaded" in str(error.details())
        trailers = dict(error.trailing_metadata() or ())
        assert trailers.get("grpc-retry-pushback-ms") == "1000"  # gRPC's Retry-After
        assert not any(f.done() for f in queued)
    for future in queued:
        future.result(timeout=WAIT_S)
    rejected = _outcome(server, "rejected")
    assert rejected == before + 1
    assert call(30.0).result(timeout=WAIT_S) is not None  # served as before
    assert _queued(server) == 0
    assert 20 not in ran(log) and {10, 11, 30} <= set(ran(log))


@pytest.mark.parametrize("method", ["ModelInfer", "Predict"])
def test_a_request_cancelled_while_queued_is_never_run(
    held_server: tuple[Any, Gate, Path], method: str
) -> None:
    (server, channel), gate, log = held_server
    call = _calls(channel)[method]
    before = _outcome(server, "cancelled")
    marker = 40.0 if method == "ModelInfer" else 41.0
    with _holding(channel, gate):
        abandoned = call(marker)
        assert wait_until(lambda: _queued(server) == 1), "the request never queued"
        assert abandoned.cancel()
        assert wait_until(lambda: _in_flight(server) == 2), "the server never saw the cancel"
    assert call(50.0).result(timeout=WAIT_S) is not None  # runs after anything left queued
    assert int(marker) not in ran(log) and 50 in ran(log)
    cancelled = _outcome(server, "cancelled")
    assert cancelled == before + 1


@pytest.mark.parametrize("method", ["ModelInfer", "Predict"])
def test_a_request_whose_deadline_passes_in_the_queue_is_never_run(
    held_server: tuple[Any, Gate, Path], method: str
) -> None:
    (server, channel), gate, log = held_server
    before = _outcome(server, "expired")
    marker = 60.0 if method == "ModelInfer" else 61.0
    late = _calls(channel, timeout=0.5)[method]
    with _holding(channel, gate):
        future = late(marker)
        error = future.exception(timeout=WAIT_S)
        assert isinstance(error, grpc.RpcError)
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert wait_until(lambda: _in_flight(server) == 2), "the server never ended the call"
    call = _calls(channel)[method]
    assert call(70.0).result(timeout=WAIT_S) is not None  # runs after anything left queued
    assert int(marker) not in ran(log) and 70 in ran(log)
    expired = _outcome(server, "expired")
    assert expired == before + 1


@pytest.mark.parametrize("method", ["ModelInfer", "Predict"])
def test_a_request_without_a_deadline_waits_in_the_queue_and_is_answered(
    held_server: tuple[Any, Gate, Path], method: str
) -> None:
    """A client that sets no deadline (perf_analyzer, tritonclient's default) is told
    "no deadline" by gRPC as a time some 292 years away: it waits for its batch as long
    as that takes, and is answered."""
    (server, channel), gate, log = held_server
    marker = 80.0 if method == "ModelInfer" else 81.0
    patient = _calls(channel, timeout=None)[method]
    with _holding(channel, gate):
        future = patient(marker)
        assert wait_until(lambda: _queued(server) == 1), "the request never queued"
        assert not future.done()
    assert future.result(timeout=WAIT_S) is not None
    assert int(marker) in ran(log)
