"""The gRPC server in its own process on a loopback port, driven by the real clients:
``tritonclient.grpc`` (KServe v2) and the ``tensorflow-serving-api`` stubs. Answers equal
the direct in-process call; bad requests get their status and the server keeps serving.

Both clients share this process: keepwarm's stubs live in their own descriptor pool, so
nothing here clashes (see keepwarm.grpc.protos)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from support.grpc_repo import TOKEN, TYPES, ServerProcess, build, direct, mlp, serve
from support.repo_builders import place

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

LIMIT = 4 * 1024 * 1024  # the server's message limit in this module
OPTIONS = ("--max-body-bytes", str(LIMIT), "--poll-seconds", "0.2", "--management-api")
READY_TIMEOUT_S = 120.0
X = np.array([[1.0, 2.0, 3.0, 4.0], [-1.0, 0.5, 0.0, 2.0]], dtype=np.float32)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = build(tmp_path_factory.mktemp("grpc") / "models")
    with serve(root, *OPTIONS) as process:
        _wait_serving(process.grpc_address)
        yield process


def _wait_serving(address: str) -> None:
    """Block until the standard health service says SERVING (it streams each change)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for answer in stub.Watch(health_pb2.HealthCheckRequest(), timeout=READY_TIMEOUT_S):
            if answer.status == health_pb2.HealthCheckResponse.SERVING:
                return


@pytest.fixture(scope="module")
def triton(served: ServerProcess) -> Iterator[Any]:
    client = grpcclient.InferenceServerClient(served.grpc_address)
    yield client
    client.close()


def _input(name: str, array: np.ndarray, datatype: str) -> Any:
    given = grpcclient.InferInput(name, list(array.shape), datatype)
    given.set_data_from_numpy(array)
    return given


def _code(call: Any) -> str:
    """The status of the tritonclient call's error, as tritonclient spells it."""
    with pytest.raises(InferenceServerException) as caught:
        call()
    return str(caught.value.status())


def _sample(datatype: str, rows: int = 3) -> np.ndarray:
    values = np.arange(rows * 2).reshape(rows, 2)
    if datatype == "BYTES":
        return np.array([[b"a%d" % v, b"\xff\x00"] for v in values[:, 0]], dtype=object)
    if datatype == "BOOL":
        return values % 2 == 0
    dtype = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}.get(datatype)
    return values.astype(dtype or datatype.lower())


def _as_bytes(array: np.ndarray) -> np.ndarray:
    """Text as the protocol carries it (ONNX Runtime answers ``str``; the wire has bytes)."""
    if array.dtype != object:
        return array
    return np.vectorize(lambda v: v.encode() if isinstance(v, str) else v, otypes=[object])(array)


# ------------------------------------------------------------------ KServe v2 (tritonclient)


def test_health_metadata_and_config(triton: Any) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("mlp") and triton.is_model_ready("mlp", "1")
    meta = triton.get_server_metadata()
    assert meta.name == "keepwarm" and "model_repository" in meta.extensions
    model = triton.get_model_metadata("mlp", "1")
    assert list(model.versions) == ["1", "2"]
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [("x", "FP32", [-1, 4])]
    assert [(t.name, t.datatype, list(t.shape)) for t in model.outputs] == [("y", "FP32", [-1, 3])]
    config = triton.get_model_config("types").config
    assert config.max_batch_size == 0
    kinds = {t.name: model_config_pb2.DataType.Name(t.data_type) for t in config.input}
    assert kinds["bytes"] == "TYPE_STRING" and kinds["fp16"] == "TYPE_FP16"
    assert [list(t.dims) for t in config.output][:1] == [[-1, 2]]


@pytest.mark.parametrize("version", ["", "1", "2"])
def test_infer_raw_equals_the_direct_call(triton: Any, served: ServerProcess, version: str) -> None:
    answer = triton.infer("mlp", [_input("x", X, "FP32")], model_version=version, request_id="r1")
    answered = int(answer.get_response().model_version)
    assert answered == (int(version) if version else 2) and answer.get_response().id == "r1"
    expected = direct(served.root, "mlp", answered, {"x": X})["y"]
    np.testing.assert_array_equal(answer.as_numpy("y"), expected)


def test_every_datatype_raw_round_trips(triton: Any, served: ServerProcess) -> None:
    inputs = {d.lower(): _sample(d) for d in TYPES}
    given = [_input(d.lower(), inputs[d.lower()], d) for d in TYPES]
    wanted = [grpcclient.InferRequestedOutput(n) for n in ("bytes_out", "fp16_out", "int8_out")]
    answer = triton.infer("types", given, outputs=wanted)
    expected = direct(served.root, "types", 1, inputs)
    assert {o.name for o in answer.get_response().outputs} == {"bytes_out", "fp16_out", "int8_out"}
    for name in ("bytes_out", "fp16_out", "int8_out"):
        np.testing.assert_array_equal(answer.as_numpy(name), _as_bytes(expected[name]))


def test_typed_contents_equal_the_direct_call(served: ServerProcess) -> None:
    fields = {
        "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
        "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
        "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
        "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
    }  # fmt: skip
    request = service_pb2.ModelInferRequest(model_name="typed", model_version="1", id="t")
    inputs = {}
    for datatype, field in fields.items():
        inputs[datatype.lower()] = array = _sample(datatype)
        tensor = request.inputs.add(name=datatype.lower(), datatype=datatype, shape=[3, 2])
        getattr(tensor.contents, field).extend(array.reshape(-1).tolist())
    with grpc.insecure_channel(served.grpc_address) as channel:
        answer = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
        request.model_name = "types"  # its FP16 input has no typed field
        request.inputs.add(name="fp16", datatype="FP16", shape=[1]).contents.fp32_contents.append(1)
        with pytest.raises(grpc.RpcError) as caught:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "raw_input_contents" in (caught.value.details() or "")
    expected = direct(served.root, "typed", 1, inputs)
    assert not answer.raw_output_contents and answer.id == "t"  # typed in, typed out
    assert len(answer.outputs) == len(fields)
    for output in answer.outputs:
        field = fields[output.datatype]
        assert list(output.shape) == [3, 2]
        wire = _as_bytes(expected[output.name]).reshape(-1).tolist()
        assert list(getattr(output.contents, field)) == wire


def test_statistics_and_repository_api(triton: Any, served: ServerProcess) -> None:
    before = triton.get_inference_statistics("spare", "1").model_stats[0].inference_count
    triton.infer("spare", [_input("x", X, "FP32")])
    stats = triton.get_inference_statistics("spare", "1").model_stats
    assert [(s.name, s.version, s.inference_count) for s in stats] == [("spare", "1", before + 1)]
    assert stats[0].inference_stats.success.count == before + 1
    index = {(m.name, m.version): m.state for m in triton.get_model_repository_index().models}
    assert index[("spare", "1")] == "READY" and index[("mlp", "2")] == "READY"
    good = {"authorization": f"Bearer {TOKEN}"}
    assert _code(lambda: triton.unload_model("spare")) == "StatusCode.UNAUTHENTICATED"
    bad = {"authorization": "Bearer nope"}
    assert (
        _code(lambda: triton.unload_model("spare", headers=bad)) == "StatusCode.PERMISSION_DENIED"
    )
    triton.unload_model("spare", headers=good)
    assert (
        _code(lambda: triton.infer("spare", [_input("x", X, "FP32")])) == "StatusCode.UNAVAILABLE"
    )
    held = [m for m in triton.get_model_repository_index().models if m.name == "spare"]
    assert [(m.state, m.reason) for m in held] == [("UNAVAILABLE", "unloaded by API")]
    triton.load_model("spare", headers=good)  # returns once it serves again
    assert triton.is_model_ready("spare")
    answer = triton.infer("spare", [_input("x", X, "FP32")])
    np.testing.assert_array_equal(
        answer.as_numpy("y"), direct(served.root, "spare", 1, {"x": X})["y"]
    )


def test_statistics_split_each_request_as_perf_analyzer_reads_them(triton: Any) -> None:
    """perf_analyzer takes the version whose ``queue`` count grew while it measured, and
    stops unless ``compute_input``, ``compute_infer`` and ``compute_output`` counts agree;
    the parts of a request's time add up to at most its whole."""
    stages = ("success", "queue", "compute_input", "compute_infer", "compute_output")

    def read() -> dict[str, tuple[int, int]]:
        row = triton.get_inference_statistics("mlp", "2").model_stats[0].inference_stats
        return {stage: (getattr(row, stage).count, getattr(row, stage).ns) for stage in stages}

    before = read()
    for _ in range(3):
        triton.infer("mlp", [_input("x", X, "FP32")], model_version="2")
    after = read()
    grew = {stage: after[stage][0] - before[stage][0] for stage in stages}
    assert grew == dict.fromkeys(stages, 3)
    spent = {stage: after[stage][1] - before[stage][1] for stage in stages}
    assert spent["compute_infer"] > 0 and spent["queue"] > 0
    assert sum(spent[stage] for stage in stages[1:]) <= spent["success"]


# ------------------------------------------------------------------ errors


def test_bad_requests_get_their_codes_and_the_server_keeps_serving(triton: Any) -> None:
    x = _input("x", X, "FP32")
    assert _code(lambda: triton.infer("nope", [x])) == "StatusCode.NOT_FOUND"
    assert _code(lambda: triton.infer("mlp", [x], model_version="9")) == "StatusCode.NOT_FOUND"
    assert _code(lambda: triton.infer("../etc", [x])) == "StatusCode.INVALID_ARGUMENT"
    ints = _input("x", X.astype(np.int32), "INT32")
    assert _code(lambda: triton.infer("mlp", [ints])) == "StatusCode.INVALID_ARGUMENT"
    wide = _input("x", np.zeros((2, 5), np.float32), "FP32")
    assert _code(lambda: triton.infer("mlp", [wide])) == "StatusCode.INVALID_ARGUMENT"
    missing = [grpcclient.InferRequestedOutput("nope")]
    assert _code(lambda: triton.infer("mlp", [x], outputs=missing)) == "StatusCode.INVALID_ARGUMENT"
    big = _input("x", np.zeros((LIMIT // 16 + 1, 4), np.float32), "FP32")  # over the limit
    assert _code(lambda: triton.infer("mlp", [big])) == "StatusCode.RESOURCE_EXHAUSTED"
    # Triton's own timeout parameter (microseconds); client deadlines: test_grpc_deadlines.py
    expired = _code(lambda: triton.infer("mlp", [x], timeout=1))
    assert expired == "StatusCode.DEADLINE_EXCEEDED"
    assert triton.infer("mlp", [x]).as_numpy("y").shape == (2, 3)  # still serving


# ------------------------------------------------------------------ health and reflection


def test_health_and_reflection_describe_every_service(served: ServerProcess) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    services = [
        "inference.GRPCInferenceService",
        "tensorflow.serving.PredictionService",
        "tensorflow.serving.ModelService",
    ]
    with grpc.insecure_channel(served.grpc_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
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


# ------------------------------------------------------------------ swap under load


def test_a_swap_under_grpc_load_fails_no_request(triton: Any, served: ServerProcess) -> None:
    failures: list[BaseException] = []
    seen: set[str] = set()
    saw_new = threading.Event()
    stop = threading.Event()
    lock = threading.Lock()

    def hammer() -> None:
        client = grpcclient.InferenceServerClient(served.grpc_address)
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
        place(served.root / "swap", 2, files=mlp(2.0))
        assert saw_new.wait(60), "version 2 never answered"
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert failures == []
    assert seen == {"1", "2"}


# ------------------------------------------------------------------ TF Serving (its own stubs)


@pytest.fixture(scope="module")
def tf_serving(served: ServerProcess) -> Iterator[Any]:
    pytest.importorskip("tensorflow_serving")
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    with grpc.insecure_channel(served.grpc_address) as channel:
        yield (
            prediction_service_pb2_grpc.PredictionServiceStub(channel),
            model_service_pb2_grpc.ModelServiceStub(channel),
        )


def _predict_request(version: int | str | None, **spec: Any) -> Any:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = spec.pop("name", "mlp")
    if isinstance(version, int):
        request.model_spec.version.value = version
    elif isinstance(version, str):
        request.model_spec.version_label = version
    request.model_spec.signature_name = spec.pop("signature_name", "")
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(X))  # tensor_content
    return request


@pytest.mark.parametrize(("version", "answered"), [(1, 1), (2, 2), ("stable", 1), ("canary", 2),
                                                 (None, 2)])  # fmt: skip
def test_tf_predict_by_version_and_label(
    tf_serving: Any, served: ServerProcess, version: int | str | None, answered: int
) -> None:
    import tensorflow as tf

    predict, _ = tf_serving
    answer = predict.Predict(_predict_request(version), timeout=30)
    assert answer.model_spec.name == "mlp" and answer.model_spec.version.value == answered
    assert answer.model_spec.signature_name == "serving_default"
    expected = direct(served.root, "mlp", answered, {"x": X})["y"]
    np.testing.assert_array_equal(tf.make_ndarray(answer.outputs["y"]), expected)


def test_tf_predict_typed_values_and_output_filter(tf_serving: Any, served: ServerProcess) -> None:
    import tensorflow as tf

    predict, _ = tf_serving
    request = _predict_request(1, signature_name="serving_default")
    request.inputs["x"].ClearField("tensor_content")
    request.inputs["x"].float_val.extend(X.reshape(-1).tolist())
    request.output_filter.append("y")
    answer = predict.Predict(request, timeout=30)
    assert list(answer.outputs) == ["y"]
    expected = direct(served.root, "mlp", 1, {"x": X})["y"]
    np.testing.assert_array_equal(tf.make_ndarray(answer.outputs["y"]), expected)


def test_tf_predict_errors_keep_serving(tf_serving: Any) -> None:
    import tensorflow as tf

    predict, _ = tf_serving

    def code(request: Any) -> grpc.StatusCode:
        with pytest.raises(grpc.RpcError) as caught:
            predict.Predict(request, timeout=30)
        return caught.value.code()  # type: ignore[no-any-return]

    assert code(_predict_request(1, name="nope")) == grpc.StatusCode.NOT_FOUND
    assert code(_predict_request("beta")) == grpc.StatusCode.NOT_FOUND
    assert code(_predict_request(0)) == grpc.StatusCode.INVALID_ARGUMENT
    assert code(_predict_request(1, signature_name="other")) == grpc.StatusCode.NOT_FOUND
    filtered = _predict_request(1)
    filtered.output_filter.append("nope")
    assert code(filtered) == grpc.StatusCode.INVALID_ARGUMENT
    ints = _predict_request(1)
    ints.inputs["x"].CopyFrom(tf.make_tensor_proto(X.astype(np.int32)))
    assert code(ints) == grpc.StatusCode.INVALID_ARGUMENT
    expanding = _predict_request(1)  # one value that would fill a 1 GiB tensor
    expanding.inputs["x"].CopyFrom(tf.make_tensor_proto(1.0, shape=[1 << 26, 4]))
    assert code(expanding) == grpc.StatusCode.INVALID_ARGUMENT
    huge = _predict_request(1)
    huge.inputs["x"].CopyFrom(tf.make_tensor_proto(np.zeros((LIMIT // 16 + 1, 4), np.float32)))
    assert code(huge) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert predict.Predict(_predict_request(1), timeout=30).model_spec.version.value == 1


def test_tf_model_metadata_and_status(tf_serving: Any) -> None:
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

    predict, models = tf_serving
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "mlp"
    request.model_spec.version.value = 1
    answer = predict.GetModelMetadata(request, timeout=30)
    assert answer.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert answer.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    x = signature.inputs["x"]
    assert (x.name, x.dtype, [d.size for d in x.tensor_shape.dim]) == ("x", 1, [-1, 4])
    assert list(signature.outputs) == ["y"]
    assert signature.method_name == "tensorflow/serving/predict"
    del request.metadata_field[:]
    with pytest.raises(grpc.RpcError) as caught:
        predict.GetModelMetadata(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    def status(version: int | str | None, name: str = "mlp") -> list[tuple[int, str]]:
        message = get_model_status_pb2.GetModelStatusRequest()
        message.model_spec.name = name
        if isinstance(version, int):
            message.model_spec.version.value = version
        elif isinstance(version, str):
            message.model_spec.version_label = version
        answer = models.GetModelStatus(message, timeout=30)
        state = get_model_status_pb2.ModelVersionStatus.State.Name
        return [(v.version, state(v.state)) for v in answer.model_version_status]

    assert status(None) == [(2, "AVAILABLE"), (1, "AVAILABLE")]
    assert status(1) == [(1, "AVAILABLE")]
    assert status("canary") == [(2, "AVAILABLE")]
    with pytest.raises(grpc.RpcError) as caught:
        status(None, name="nope")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


# ------------------------------------------------------------------ TLS


def test_tls_serves_tls_clients_only(served: ServerProcess, tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    from support.tls import self_signed

    cert, _ = self_signed(tmp_path / "tls")
    tls = ("--tls-cert", str(cert), "--tls-key", str(tmp_path / "tls" / "key.pem"))
    with serve(served.root, *OPTIONS, *tls) as secure:
        client = grpcclient.InferenceServerClient(
            secure.grpc_address, ssl=True, root_certificates=str(cert)
        )
        try:
            answer = client.infer("mlp", [_input("x", X, "FP32")], model_version="1")
            expected = direct(served.root, "mlp", 1, {"x": X})["y"]
            np.testing.assert_array_equal(answer.as_numpy("y"), expected)
        finally:
            client.close()
        plain = grpcclient.InferenceServerClient(secure.grpc_address)
        try:
            assert _code(lambda: plain.is_server_live(client_timeout=10)) == (
                "StatusCode.UNAVAILABLE"
            )
        finally:
            plain.close()
