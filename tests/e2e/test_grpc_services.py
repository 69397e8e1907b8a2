"""The gRPC server as a whole (the shared ``grpc_served``): the standard health service and
reflection describe every service; a new version swapped in under gRPC load fails no
request; with TLS it serves TLS clients only."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from support.grpc_repo import OPTIONS, READY_TIMEOUT_S, ServerProcess, X, direct, mlp, serve
from support.grpc_repo import infer_input as _input
from support.repo_builders import place

# ------------------------------------------------------------------ health and reflection


def test_health_and_reflection_describe_every_service(grpc_served: ServerProcess) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    services = [
        "inference.GRPCInferenceService",
        "tensorflow.serving.PredictionService",
        "tensorflow.serving.ModelService",
    ]
    with grpc.insecure_channel(grpc_served.grpc_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        # an earlier test's load may still be settling (the server is not ready while a
        # version loads): "" is watched until SERVING; it turns SERVING last, so every
        # service says SERVING from then on
        watched = health.Watch(health_pb2.HealthCheckRequest(), timeout=READY_TIMEOUT_S)
        statuses = [answer.status for answer in _until_serving(watched)]
        assert statuses[-1] == health_pb2.HealthCheckResponse.SERVING, statuses
        for name in ("", *services):
            answer = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, name
        with pytest.raises(grpc.RpcError) as caught:
            health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        database = ProtoReflectionDescriptorDatabase(channel)
        assert set(services) <= set(database.get_services())
        found = database.FindFileContainingSymbol("tensorflow.serving.PredictRequest")
        assert found.name == "tensorflow_serving/apis/predict.proto"


def _until_serving(answers: Any) -> Iterator[Any]:
    """The watched statuses up to and including the first SERVING."""
    from grpc_health.v1 import health_pb2

    for answer in answers:
        yield answer
        if answer.status == health_pb2.HealthCheckResponse.SERVING:
            return


# ------------------------------------------------------------------ swap under load


def test_a_swap_under_grpc_load_fails_no_request(grpc_served: ServerProcess) -> None:
    failures: list[BaseException] = []
    seen: set[str] = set()
    saw_new = threading.Event()
    stop = threading.Event()
    lock = threading.Lock()

    def hammer() -> None:
        client = grpcclient.InferenceServerClient(grpc_served.grpc_address)
        try:
            for _ in range(20_000):  # bounded; ends long before when the new version answers
                if stop.is_set():
                    return
                try:
                    answer = client.infer("swap", [_input("x", X, "FP32")], client_timeout=30)
                except Exception as exc:
                    with lock:
                        failures.append(exc)
                    continue
                version = answer.get_response().model_version
                with lock:
                    seen.add(version)
                if version == "2":
                    saw_new.set()
        finally:
            client.close()

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        place(grpc_served.root / "swap", 2, files=mlp(2.0))
        assert saw_new.wait(60), "version 2 never answered"
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert failures == []
    assert seen == {"1", "2"}


# ------------------------------------------------------------------ TLS


def test_tls_serves_tls_clients_only(grpc_served: ServerProcess, tmp_path: Path) -> None:
    from support.tls import self_signed

    cert, _ = self_signed(tmp_path / "tls")
    tls = ("--tls-cert", str(cert), "--tls-key", str(tmp_path / "tls" / "key.pem"))
    with serve(grpc_served.root, *OPTIONS, *tls) as secure:
        client = grpcclient.InferenceServerClient(
            secure.grpc_address, ssl=True, root_certificates=str(cert)
        )
        try:
            answer = client.infer("mlp", [_input("x", X, "FP32")], model_version="1")
            expected = direct(grpc_served.root, "mlp", 1, {"x": X})["y"]
            np.testing.assert_array_equal(answer.as_numpy("y"), expected)
        finally:
            client.close()
        plain = grpcclient.InferenceServerClient(secure.grpc_address)
        try:
            with pytest.raises(InferenceServerException) as caught:
                plain.is_server_live(client_timeout=10)
            assert str(caught.value.status()) == "StatusCode.UNAVAILABLE"
        finally:
            plain.close()
