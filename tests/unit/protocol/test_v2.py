"""KServe v2 codec: JSON and binary bodies, every datatype, and hostile inputs."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest

from keepwarm.errors import InvalidInputError
from keepwarm.protocol import v2
from keepwarm.protocol.dtypes import V2_TO_NUMPY


def body(*inputs: dict[str, object], **extra: object) -> bytes:
    return orjson.dumps({"inputs": list(inputs), **extra})


def binary_body(header: dict[str, object], *chunks: bytes) -> tuple[bytes, int]:
    head = orjson.dumps(header)
    return head + b"".join(chunks), len(head)


NUMERIC = [name for name in V2_TO_NUMPY if name != "BYTES"]


@pytest.mark.parametrize("datatype", NUMERIC)
def test_json_data_flat_and_nested_give_the_declared_dtype(datatype: str) -> None:
    data = [[1, 0], [1, 1]] if datatype != "BOOL" else [[True, False], [True, True]]
    for sent in (data, [x for row in data for x in row]):
        request = v2.decode_request(
            body({"name": "x", "datatype": datatype, "shape": [2, 2], "data": sent})
        )
        array = request.inputs["x"]
        assert array.dtype == V2_TO_NUMPY[datatype]
        assert array.shape == (2, 2)
        np.testing.assert_array_equal(array, np.asarray(data, dtype=V2_TO_NUMPY[datatype]))


@pytest.mark.parametrize("datatype", NUMERIC)
def test_binary_data_is_a_view_of_the_body(datatype: str) -> None:
    dtype = V2_TO_NUMPY[datatype]
    values = (np.arange(6) % 2).astype(dtype).reshape(2, 3)
    raw = values.tobytes()
    tensor = {"name": "x", "datatype": datatype, "shape": [2, 3]}
    tensor["parameters"] = {"binary_data_size": len(raw)}
    data, length = binary_body({"inputs": [tensor]}, raw)
    array = v2.decode_request(data, header_length=length).inputs["x"]
    np.testing.assert_array_equal(array, values)
    assert np.shares_memory(array, np.frombuffer(data, dtype=np.uint8))  # no copy


def test_bytes_in_json_and_binary() -> None:
    request = v2.decode_request(
        body({"name": "s", "datatype": "BYTES", "shape": [2], "data": ["héllo", "b"]})
    )
    assert request.inputs["s"].tolist() == ["héllo".encode(), b"b"]
    raw = b"".join(struct.pack("<I", len(s)) + s for s in (b"\x00\xff", b"", b"xyz"))
    tensor = {"name": "s", "datatype": "BYTES", "shape": [3]}
    tensor["parameters"] = {"binary_data_size": len(raw)}
    data, length = binary_body({"inputs": [tensor]}, raw)
    assert v2.decode_request(data, header_length=length).inputs["s"].tolist() == [
        b"\x00\xff",
        b"",
        b"xyz",
    ]


def test_two_binary_inputs_are_taken_in_order_and_must_add_up() -> None:
    a, b = np.ones(3, np.float32), np.arange(2, dtype=np.int64)
    header = {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [3], "parameters": {"binary_data_size": 12}},
            {
                "name": "b",
                "datatype": "INT64",
                "shape": [2],
                "parameters": {"binary_data_size": 16},
            },
        ]
    }
    data, length = binary_body(header, a.tobytes(), b.tobytes())
    got = v2.decode_request(data, header_length=length).inputs
    np.testing.assert_array_equal(got["a"], a)
    np.testing.assert_array_equal(got["b"], b)
    with pytest.raises(InvalidInputError, match="add up to"):
        v2.decode_request(data + b"extra", header_length=length)


def test_parameters_outputs_and_id_are_kept() -> None:
    request = v2.decode_request(
        body(
            {"name": "x", "datatype": "FP32", "shape": [1], "data": [1]},
            id="abc",
            parameters={"binary_data_output": True, "timeout": 5},
            outputs=[{"name": "y", "parameters": {"binary_data": False}}, {"name": "z"}],
        )
    )
    assert request.id == "abc"
    assert request.binary_outputs
    assert request.parameters["timeout"] == 5
    assert request.outputs == (v2.RequestedOutput("y", False), v2.RequestedOutput("z", None))


HOSTILE = [
    (b"{", "malformed JSON"),
    (b"[]", "JSON object"),
    (b"[" * 10_000 + b"]" * 10_000, "nested deeper than 64"),
    (orjson.dumps({"inputs": [], "parameters": {"a": [[[[[[[[[[[[[1]]]]]]]]]]]]]}}), "non-empty"),
    (body({"name": "x", "datatype": "FP33", "shape": [1], "data": [1]}), "unknown datatype 'FP33'"),
    (
        body({"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3]]}),
        "rectangular",
    ),
    (body({"name": "x", "datatype": "FP32", "shape": [3], "data": [1, 2]}), "needs 3 elements"),
    (body({"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}), "non-negative"),
    (body({"name": "x", "datatype": "FP32", "shape": "3", "data": [1]}), "list of non-negative"),
    (body({"name": "x", "datatype": "FP32", "shape": [2**40, 2**40], "data": [1]}), "too many"),
    (body({"name": "x", "datatype": "FP32", "shape": [1] * 65, "data": [1]}), "at most 64"),
    # no elements, but dimensions whose product is past any array numpy can make
    (body({"name": "x", "datatype": "FP32", "shape": [2**32, 2**32, 0], "data": []}), "too many"),
    (body({"name": "x", "datatype": "FP32", "shape": [2**62, 0], "data": []}), "too many"),
    (body({"name": "x", "datatype": "INT32", "shape": [1], "data": [1.5]}), "expected int32"),
    (body({"name": "x", "datatype": "FP32", "shape": [1], "data": ["a"]}), "got strings"),
    (body({"name": "x", "datatype": "UINT8", "shape": [1], "data": [300]}), "out of range"),
    (
        body({"name": "x", "datatype": "FP32", "shape": [1], "data": [None]}),
        "float32 values, got null",
    ),
    (body({"name": "x", "datatype": "FP32", "shape": [1], "data": {"a": 1}}), "got an object"),
    (body({"name": "x", "datatype": "FP32", "shape": [2], "data": ["a", None]}), "got null"),
    (body({"name": "x", "datatype": "FP32", "shape": [1]}), "no 'data'"),
    (body({"name": "x", "datatype": "BYTES", "shape": [1], "data": [None]}), "'x'.* got null"),
    (body({"name": "x", "datatype": "BYTES", "shape": [2], "data": ["a", {}]}), "'x'.*an object"),
    (body({"name": "x", "datatype": "BYTES", "shape": [1], "data": [1]}), "'x': expected strings"),
    (
        body(
            {"name": "x", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": "4"}}
        ),
        "binary_data_size must be an integer >= 0, got '4'",
    ),
    (
        orjson.dumps(
            {
                **orjson.loads(body({"name": "x", "datatype": "FP32", "shape": [1], "data": [1]})),
                "outputs": [{"name": "y", "parameters": {"binary_data": "yes"}}],
            }
        ),
        "binary_data must be true or false, got 'yes'",
    ),
    (body({"datatype": "FP32", "shape": [1], "data": [1]}), "string 'name'"),
    (
        body(
            {"name": "x", "datatype": "FP32", "shape": [1], "data": [1]},
            {"name": "x", "datatype": "FP32", "shape": [1], "data": [1]},
        ),
        "given twice",
    ),
    (orjson.dumps({"inputs": [{"name": "x"}], "outputs": "y"}), "unknown datatype None"),
    (
        body(
            {"name": "x", "datatype": "FP32", "shape": [1], "data": [1]},
            outputs=[{"name": "y"}, {"name": "y", "parameters": {"binary_data": True}}],
        ),
        "requested output 'y' is given twice",
    ),
]


@pytest.mark.parametrize(("data", "message"), HOSTILE)
def test_hostile_bodies_are_invalid_input_naming_the_problem(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        v2.decode_request(data)


def test_depth_exactly_at_the_limit_passes_and_one_more_fails() -> None:
    def request(lists: int) -> bytes:
        data: object = 1.0
        for _ in range(lists):
            data = [data]
        # The body, "inputs" and the tensor object are three levels; the data's lists the rest.
        tensor = {"name": "x", "datatype": "FP32", "shape": [1] * lists, "data": data}
        return orjson.dumps({"inputs": [tensor]})

    assert v2.decode_request(request(61)).inputs["x"].size == 1
    with pytest.raises(InvalidInputError, match="deeper than 64"):
        v2.decode_request(request(62))


def test_hostile_binary_sections() -> None:
    tensor = {"name": "x", "datatype": "FP32", "shape": [4], "parameters": {"binary_data_size": 8}}
    data, length = binary_body({"inputs": [tensor]}, b"\0" * 8)
    with pytest.raises(InvalidInputError, match="needs 16 bytes"):
        v2.decode_request(data, header_length=length)
    tensor["parameters"] = {"binary_data_size": 1000}
    data, length = binary_body({"inputs": [tensor]}, b"\0" * 16)
    with pytest.raises(InvalidInputError, match="does not fit"):
        v2.decode_request(data, header_length=length)
    with pytest.raises(InvalidInputError, match="outside the body"):
        v2.decode_request(data, header_length=len(data) + 1)
    tensor = {"name": "x", "datatype": "FP32", "shape": [2**32, 2**32, 0], "parameters": {}}
    tensor["parameters"] = {"binary_data_size": 0}
    data, length = binary_body({"inputs": [tensor]})
    with pytest.raises(InvalidInputError, match="too many elements"):
        v2.decode_request(data, header_length=length)
    tensor = {"name": "s", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}}
    data, length = binary_body({"inputs": [tensor]}, struct.pack("<I", 99) + b"ab")
    with pytest.raises(InvalidInputError, match="runs past"):
        v2.decode_request(data, header_length=length)


def test_encode_json_and_binary_outputs() -> None:
    outputs = {
        "probs": np.array([[0.25, 0.75]], np.float32),
        "half": np.array([1.5], np.float16),
        "text": np.array([b"hi"], dtype=object),
    }
    request = v2.InferRequest(inputs={}, id="7")
    data, length = v2.encode_response(request, "m", 3, outputs)
    assert length is None
    answer = orjson.loads(data)
    assert answer["model_name"] == "m" and answer["model_version"] == "3" and answer["id"] == "7"
    by_name = {o["name"]: o for o in answer["outputs"]}
    assert by_name["probs"] == {
        "name": "probs",
        "datatype": "FP32",
        "shape": [1, 2],
        "data": [0.25, 0.75],
    }
    assert by_name["half"]["data"] == [1.5] and by_name["half"]["datatype"] == "FP16"
    assert by_name["text"]["data"] == ["hi"] and by_name["text"]["datatype"] == "BYTES"

    wanted = (v2.RequestedOutput("probs", True), v2.RequestedOutput("text", None))
    data, length = v2.encode_response(v2.InferRequest(inputs={}, outputs=wanted), "m", 1, outputs)
    assert length is not None
    header = orjson.loads(data[:length])
    assert [o["name"] for o in header["outputs"]] == ["probs", "text"]
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 8}
    np.testing.assert_array_equal(np.frombuffer(data[length:], np.float32), [0.25, 0.75])
    with pytest.raises(InvalidInputError, match="'nope' is not an output"):
        v2.encode_response(
            v2.InferRequest(inputs={}, outputs=(v2.RequestedOutput("nope", None),)), "m", 1, outputs
        )


def _image_body(size: int) -> tuple[bytes, int]:
    x = np.arange(size, dtype=np.float32).reshape(1, size)
    tensor = {"name": "x", "datatype": "FP32", "shape": [1, size]}
    return binary_body({"inputs": [{**tensor, "parameters": {"binary_data_size": x.nbytes}}]},
                       x.tobytes())  # fmt: skip


def test_decode_small_takes_a_large_binary_numeric_tensor_as_a_view_of_the_body() -> None:
    data, length = _image_body(100_000)  # 400 kB of tensor behind a 100-byte header
    request = v2.decode_small(data, header_length=length, limit=1024)
    assert request is not None
    x = request.inputs["x"]
    np.testing.assert_array_equal(x, v2.decode_request(data, header_length=length).inputs["x"])
    assert np.shares_memory(x, np.frombuffer(data, dtype=np.uint8))


def test_decode_small_leaves_large_json_and_large_binary_bytes_to_a_thread() -> None:
    data, length = _image_body(4)
    assert v2.decode_small(data, header_length=length, limit=length - 1) is None
    json_body = body({"name": "x", "datatype": "FP32", "shape": [300], "data": [1.5] * 300})
    assert v2.decode_small(json_body, limit=len(json_body) - 1) is None
    assert v2.decode_small(json_body, limit=len(json_body)) is not None
    items = b"".join(struct.pack("<I", 3) + b"abc" for _ in range(100))  # 700 bytes
    tensor = {"name": "s", "datatype": "BYTES", "shape": [100]}
    strings, header = binary_body(
        {"inputs": [{**tensor, "parameters": {"binary_data_size": len(items)}}]}, items
    )
    assert v2.decode_small(strings, header_length=header, limit=len(items) - 1) is None
    small = v2.decode_small(strings, header_length=header, limit=len(items))
    assert small is not None and small.inputs["s"].tolist() == [b"abc"] * 100


@pytest.mark.parametrize(
    "header", [b"[1, 2]", b'{"inputs": 3}', b'{"inputs": [{"name": "s", "datatype": "BYTES"}]}']
)
def test_decode_small_refuses_what_decode_request_refuses(header: bytes) -> None:
    with pytest.raises(InvalidInputError) as small:
        v2.decode_small(header + b"\0" * 8, header_length=len(header), limit=1024)
    with pytest.raises(InvalidInputError) as full:
        v2.decode_request(header + b"\0" * 8, header_length=len(header))
    assert str(small.value) == str(full.value)
