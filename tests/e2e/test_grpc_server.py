"""The gRPC server's KServe v2 service in its own process on a loopback port (the shared
``grpc_served``, see ``support.grpc_repo``), driven by ``tritonclient.grpc``: answers equal
the direct in-process call; bad requests get their status and the server keeps serving.

keepwarm's stubs live in their own descriptor pool, so the client's and the server's
protos never clash (see keepwarm.grpc.protos); TF Serving's service is tested in
``test_grpc_tfserving.py``, health, reflection, a swap and TLS in ``test_grpc_services.py``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from support.grpc_repo import LIMIT, TOKEN, TYPES, ServerProcess, X, direct
from support.grpc_repo import infer_input as _input


@pytest.fixture(scope="module")
def triton(grpc_served: ServerProcess) -> Iterator[Any]:
    client = grpcclient.InferenceServerClient(grpc_served.grpc_address)
    yield client
    client.close()


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
def test_infer_raw_equals_the_direct_call(
    triton: Any, grpc_served: ServerProcess, version: str
) -> None:
    answer = triton.infer("mlp", [_input("x", X, "FP32")], model_version=version, request_id="r1")
    answered = int(answer.get_response().model_version)
    assert answered == (int(version) if version else 2) and answer.get_response().id == "r1"
    expected = direct(grpc_served.root, "mlp", answered, {"x": X})["y"]
    np.testing.assert_array_equal(answer.as_numpy("y"), expected)


def test_every_datatype_raw_round_trips(triton: Any, grpc_served: ServerProcess) -> None:
    inputs = {d.lower(): _sample(d) for d in TYPES}
    given = [_input(d.lower(), inputs[d.lower()], d) for d in TYPES]
    wanted = [grpcclient.InferRequestedOutput(n) for n in ("bytes_out", "fp16_out", "int8_out")]
    answer = triton.infer("types", given, outputs=wanted)
    expected = direct(grpc_served.root, "types", 1, inputs)
    assert {o.name for o in answer.get_response().outputs} == {"bytes_out", "fp16_out", "int8_out"}
    for name in ("bytes_out", "fp16_out", "int8_out"):
        np.testing.assert_array_equal(answer.as_numpy(name), _as_bytes(expected[name]))


def test_typed_contents_equal_the_direct_call(grpc_served: ServerProcess) -> None:
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
    with grpc.insecure_channel(grpc_served.grpc_address) as channel:
        answer = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
        request.model_name = "types"  # its FP16 input has no typed field
        request.inputs.add(name="fp16", datatype="FP16", shape=[1]).contents.fp32_contents.append(1)
        with pytest.raises(grpc.RpcError) as caught:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "raw_input_contents" in (caught.value.details() or "")
    expected = direct(grpc_served.root, "typed", 1, inputs)
    assert not answer.raw_output_contents and answer.id == "t"  # typed in, typed out
    assert len(answer.outputs) == len(fields)
    for output in answer.outputs:
        field = fields[output.datatype]
        assert list(output.shape) == [3, 2]
        wire = _as_bytes(expected[output.name]).reshape(-1).tolist()
        assert list(getattr(output.contents, field)) == wire


def test_statistics_and_repository_api(triton: Any, grpc_served: ServerProcess) -> None:
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
        answer.as_numpy("y"), direct(grpc_served.root, "spare", 1, {"x": X})["y"]
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
    for digits in ("\u00b2", "\u0661"):  # int() refused the one (INTERNAL), read 1 in the other
        invalid = _code(lambda: triton.infer("mlp", [x], model_version=digits))  # noqa: B023
        assert invalid == "StatusCode.INVALID_ARGUMENT"
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


def test_model_ready_by_label(triton: Any) -> None:
    """A label is the version it names (it said ready for any label, even an unknown one)."""
    assert triton.is_model_ready("mlp", "stable") and triton.is_model_ready("mlp", "canary")
    assert _code(lambda: triton.is_model_ready("mlp", "beta")) == "StatusCode.NOT_FOUND"
    assert _code(lambda: triton.is_model_ready("mlp", "..")) == "StatusCode.INVALID_ARGUMENT"


def test_repository_parameters_keepwarm_would_ignore_are_refused(triton: Any) -> None:
    """Triton's config override is not honoured: refused, not ignored; an unload as
    tritonclient sends it (``unload_dependents``) is taken."""
    headers = {"authorization": f"Bearer {TOKEN}"}
    failed = _code(lambda: triton.load_model("spare", headers=headers, config="{}"))
    assert failed == "StatusCode.INVALID_ARGUMENT"
    triton.unload_model("spare", headers=headers, unload_dependents=True)
    triton.load_model("spare", headers=headers)


def test_a_repository_name_not_its_own_is_not_found(grpc_served: ServerProcess) -> None:
    """It was ignored: a named index listed this server's models, a named unload unloaded
    one. A load or unload checks the token first, as every repository API call."""
    good = (("authorization", f"Bearer {TOKEN}"),)
    with grpc.insecure_channel(grpc_served.grpc_address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        spare = {"model_name": "spare"}
        calls = [
            (stub.RepositoryIndex, service_pb2.RepositoryIndexRequest, {}),
            (stub.RepositoryModelLoad, service_pb2.RepositoryModelLoadRequest, spare),
            (stub.RepositoryModelUnload, service_pb2.RepositoryModelUnloadRequest, spare),
        ]
        for call, message, fields in calls:
            request = message(repository_name="elsewhere", **fields)
            if fields:
                with pytest.raises(grpc.RpcError) as caught:
                    call(request, timeout=30)
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as caught:
                call(request, timeout=30, metadata=good)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            assert "repository 'elsewhere' is not served here" in str(caught.value.details())
        ready = stub.ModelReady(service_pb2.ModelReadyRequest(name="spare"), timeout=30)
        assert ready.ready
        assert stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(), timeout=30).models
