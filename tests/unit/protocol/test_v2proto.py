"""KServe v2 gRPC messages <-> numpy: typed contents and raw contents, requested outputs,
and hostile requests."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest

from keepwarm.errors import InvalidInputError
from keepwarm.grpc.protos.inference import grpc_service_pb2 as pb
from keepwarm.protocol import v2proto

LIMIT = 1 << 20


def request(*tensors: tuple[str, str, list[int], dict[str, Any]], raw: list[bytes] | None = None,
            **fields: Any) -> Any:  # fmt: skip
    message = pb.ModelInferRequest(model_name="m", raw_input_contents=raw or [], **fields)
    for name, datatype, shape, contents in tensors:
        tensor = message.inputs.add(name=name, datatype=datatype, shape=shape)
        for field, values in contents.items():
            getattr(tensor.contents, field).extend(values)
    return message


def decode(message: Any) -> dict[str, np.ndarray]:
    return v2proto.decode_request(message, max_bytes=LIMIT).inputs


@pytest.mark.parametrize(
    ("datatype", "field", "values"),
    [
        ("BOOL", "bool_contents", [True, False]),
        ("INT8", "int_contents", [-128, 127]),
        ("INT16", "int_contents", [-300, 300]),
        ("INT32", "int_contents", [-(2**31), 5]),
        ("INT64", "int64_contents", [-(2**50), 5]),
        ("UINT8", "uint_contents", [0, 255]),
        ("UINT16", "uint_contents", [0, 65535]),
        ("UINT32", "uint_contents", [2**32 - 1, 1]),
        ("UINT64", "uint64_contents", [2**64 - 1, 1]),
        ("FP32", "fp32_contents", [1.5, -2.0]),
        ("FP64", "fp64_contents", [1.5, -2.0]),
        ("BYTES", "bytes_contents", [b"a", b"\xff"]),
    ],
)
def test_typed_round_trip(datatype: str, field: str, values: list[Any]) -> None:
    wire = pb.ModelInferRequest.FromString(
        request(("x", datatype, [2, 1], {field: values})).SerializeToString()
    )
    decoded = v2proto.decode_request(wire, max_bytes=LIMIT)
    array = decoded.inputs["x"]
    assert array.shape == (2, 1)
    assert array.reshape(-1).tolist() == values
    response = v2proto.encode_response(decoded, "m", 3, {"y": array})
    assert response.model_version == "3" and not response.raw_output_contents
    (out,) = response.outputs
    assert (out.name, out.datatype, list(out.shape)) == ("y", datatype, [2, 1])
    assert list(getattr(out.contents, field)) == values


def test_raw_round_trip_without_copy() -> None:
    images = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    text = np.array([b"ab", b""], dtype=object)
    raw = [images.tobytes(), b"".join(struct.pack("<I", len(t)) + t for t in text)]
    message = request(("img", "FP32", [2, 3, 4], {}), ("t", "BYTES", [2], {}), raw=raw)
    decoded = v2proto.decode_request(message, max_bytes=LIMIT)
    np.testing.assert_array_equal(decoded.inputs["img"], images)
    assert not decoded.inputs["img"].flags.owndata  # a view of the message's bytes
    assert decoded.inputs["t"].tolist() == [b"ab", b""]
    half = np.array([1.0, 2.0], np.float16)
    response = v2proto.encode_response(decoded, "m", 1, {"a": images, "h": half, "t": text})
    assert [o.datatype for o in response.outputs] == ["FP32", "FP16", "BYTES"]
    assert response.raw_output_contents[0] == images.tobytes()
    assert response.raw_output_contents[1] == half.tobytes()
    assert response.raw_output_contents[2] == raw[1]


def test_fp16_output_of_a_typed_request_is_raw() -> None:
    decoded = v2proto.decode_request(
        request(("x", "FP32", [1], {"fp32_contents": [1.0]})), max_bytes=LIMIT
    )
    response = v2proto.encode_response(decoded, "m", 1, {"h": np.ones(2, np.float16)})
    assert len(response.raw_output_contents) == 1


def test_requested_outputs_id_and_parameters() -> None:
    message = request(("x", "FP32", [1], {"fp32_contents": [1.0]}), id="req-7")
    message.outputs.add(name="b")
    message.parameters["timeout"].int64_param = 5000
    message.parameters["flag"].bool_param = True
    decoded = v2proto.decode_request(message, max_bytes=LIMIT)
    assert decoded.parameters == {"timeout": 5000, "flag": True}
    outputs = {"a": np.zeros(1, np.float32), "b": np.ones(1, np.float32)}
    response = v2proto.encode_response(decoded, "m", 2, outputs)
    assert response.id == "req-7" and [o.name for o in response.outputs] == ["b"]
    message.outputs.add(name="nope")
    with pytest.raises(InvalidInputError, match="'nope' is not an output"):
        v2proto.encode_response(v2proto.decode_request(message, max_bytes=LIMIT), "m", 2, outputs)


@pytest.mark.parametrize(
    ("message", "words"),
    [
        (pb.ModelInferRequest(model_name="m"), "no inputs"),
        (request(("x", "FP32", [2], {"fp32_contents": [1.0]})), "needs 2 elements"),
        (request(("x", "FP32", [1], {"int_contents": [1]})), "has 0"),
        (request(("x", "FP16", [1], {})), "raw_input_contents"),
        (request(("x", "INT8", [1], {"int_contents": [128]})), "outside INT8"),
        (request(("x", "UINT8", [1], {"uint_contents": [256]})), "outside UINT8"),
        (request(("x", "FP99", [1], {})), "unknown datatype"),
        (request(("x", "FP32", [-1], {})), "non-negative"),
        (request(("x", "FP32", [2**40, 2**40], {})), "too many elements"),
        (request(("x", "FP32", [1 << 20], {})), "more than the limit"),
        (
            request(
                ("x", "FP32", [1], {"fp32_contents": [1.0]}),
                ("x", "FP32", [1], {"fp32_contents": [1.0]}),
            ),
            "given twice",
        ),
        (request(("x", "FP32", [1], {}), ("y", "FP32", [1], {}), raw=[b"1234"]), "2 inputs"),
        (request(("x", "FP32", [2], {}), raw=[b"1234"]), "needs 8 bytes"),
        (request(("x", "FP32", [1], {"fp32_contents": [1.0]}), raw=[b"1234"]), "both"),
        (request(("x", "BYTES", [1], {}), raw=[b"\x05\x00\x00\x00ab"]), "runs past"),
        (request(("x", "BYTES", [2], {}), raw=[b"\x00\x00\x00\x00"]), "got 1 strings"),
    ],
)
def test_hostile_requests(message: Any, words: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        decode(message)
    assert words in str(caught.value)


def test_classification_is_refused() -> None:
    message = request(("x", "FP32", [1], {"fp32_contents": [1.0]}))
    message.outputs.add(name="y").parameters["classification"].int64_param = 3
    with pytest.raises(InvalidInputError, match="classification"):
        decode(message)
