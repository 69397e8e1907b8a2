"""TensorProto <-> numpy: tensor_content and typed fields, TensorFlow's padding rule, and
hostile tensors (wrong sizes, unknown dtypes, ranges, shapes that expand without bound)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from keepwarm.errors import InvalidInputError
from keepwarm.grpc.protos.tensorflow.core.framework import types_pb2
from keepwarm.protocol.tensorproto import TensorProto, from_numpy, to_numpy

LIMIT = 1 << 20


def proto(dtype: str, shape: list[int], **fields: Any) -> Any:
    message = TensorProto(dtype=types_pb2.DataType.Value(dtype), **fields)
    for size in shape:
        message.tensor_shape.dim.add(size=size)
    return message


def decode(message: Any) -> np.ndarray:
    return to_numpy(message, name="x", max_bytes=LIMIT)


@pytest.mark.parametrize(
    "dtype", ["float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
              "uint32", "uint64", "bool", "float16"],
)  # fmt: skip
def test_round_trip_through_tensor_content(dtype: str) -> None:
    array = (np.arange(6) % 2 if dtype == "bool" else np.arange(6) + 1).astype(dtype)
    message = from_numpy(array.reshape(2, 3), name="y")
    wire = TensorProto.FromString(message.SerializeToString())
    out = decode(wire)
    assert out.dtype == np.dtype(dtype) and out.shape == (2, 3)
    np.testing.assert_array_equal(out, array.reshape(2, 3))


@pytest.mark.parametrize(
    ("dtype", "field", "values", "expected"),
    [
        ("DT_FLOAT", "float_val", [1.5, 2.5], np.array([1.5, 2.5], np.float32)),
        ("DT_DOUBLE", "double_val", [1.5, 2.5], np.array([1.5, 2.5])),
        ("DT_INT32", "int_val", [-1, 7], np.array([-1, 7], np.int32)),
        ("DT_INT8", "int_val", [-128, 127], np.array([-128, 127], np.int8)),
        ("DT_UINT8", "int_val", [0, 255], np.array([0, 255], np.uint8)),
        ("DT_UINT16", "int_val", [0, 65535], np.array([0, 65535], np.uint16)),
        ("DT_INT64", "int64_val", [-(2**40), 3], np.array([-(2**40), 3], np.int64)),
        ("DT_UINT32", "uint32_val", [2**32 - 1, 0], np.array([2**32 - 1, 0], np.uint32)),
        ("DT_UINT64", "uint64_val", [2**64 - 1, 0], np.array([2**64 - 1, 0], np.uint64)),
        ("DT_BOOL", "bool_val", [True, False], np.array([True, False])),
        ("DT_HALF", "half_val", [0x3C00, 0xC000], np.array([1.0, -2.0], np.float16)),
    ],
)
def test_typed_fields(dtype: str, field: str, values: list[Any], expected: np.ndarray) -> None:
    out = decode(proto(dtype, [2], **{field: values}))
    assert out.dtype == expected.dtype
    np.testing.assert_array_equal(out, expected)


def test_strings_are_bytes_objects() -> None:
    out = decode(proto("DT_STRING", [2, 1], string_val=[b"a", b"\xff\x00"]))
    assert out.dtype == object and out.shape == (2, 1)
    assert out.reshape(-1).tolist() == [b"a", b"\xff\x00"]
    back = from_numpy(np.array([["é"], ["b"]], dtype=object), name="s")
    assert list(back.string_val) == ["é".encode(), b"b"]


def test_few_values_fill_the_shape_as_tensorflow_does() -> None:
    np.testing.assert_array_equal(decode(proto("DT_FLOAT", [2, 2], float_val=[3.0])), 3.0)
    np.testing.assert_array_equal(
        decode(proto("DT_INT32", [4], int_val=[1, 2])), np.array([1, 2, 2, 2], np.int32)
    )
    np.testing.assert_array_equal(decode(proto("DT_FLOAT", [3])), np.zeros(3, np.float32))
    assert decode(proto("DT_STRING", [2], string_val=[b"z"])).tolist() == [b"z", b"z"]


def test_scalar_and_empty_tensors() -> None:
    assert decode(proto("DT_FLOAT", [], float_val=[2.0])).shape == ()
    empty = decode(proto("DT_FLOAT", [0, 3]))
    assert empty.shape == (0, 3)


@pytest.mark.parametrize(
    ("message", "words"),
    [
        (proto("DT_FLOAT", [3], tensor_content=b"\x00" * 8), "needs 12 bytes"),
        (proto("DT_FLOAT", [1], float_val=[1.0, 2.0]), "holds 1 elements"),
        (proto("DT_FLOAT", [2], int_val=[1, 2]), "in int_val"),
        (proto("DT_UINT8", [1], int_val=[256]), "outside uint8"),
        (proto("DT_INT8", [1], int_val=[-129]), "outside int8"),
        (proto("DT_HALF", [1], half_val=[70000]), "outside 16 bits"),
        (proto("DT_STRING", [1], tensor_content=b"ab"), "string_val"),
        (proto("DT_COMPLEX64", [1]), "DT_COMPLEX64 is not served"),
        (proto("DT_RESOURCE", [1]), "DT_RESOURCE is not served"),
        (TensorProto(dtype=999), "dtype 999"),
        (proto("DT_FLOAT", [-1], float_val=[1.0]), "non-negative"),
        (proto("DT_FLOAT", [2**40, 2**40], float_val=[1.0]), "too many elements"),
        (proto("DT_FLOAT", [1 << 20, 1024], float_val=[1.0]), "more than the limit"),
        (proto("DT_FLOAT", [1] * 65, float_val=[1.0]), "at most 64"),
    ],
)
def test_hostile_tensors(message: Any, words: str) -> None:
    with pytest.raises(InvalidInputError, match="input 'x'") as caught:
        decode(message)
    assert words in str(caught.value)


def test_unknown_rank_is_refused() -> None:
    message = proto("DT_FLOAT", [], float_val=[1.0])
    message.tensor_shape.unknown_rank = True
    with pytest.raises(InvalidInputError, match="known shape"):
        decode(message)


def test_output_without_a_tensorflow_type() -> None:
    with pytest.raises(InvalidInputError, match="output 'c'"):
        from_numpy(np.zeros(2, np.complex64), name="c")


def test_tensorflow_reads_and_writes_the_same_bytes() -> None:
    import tensorflow as tf

    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    theirs = tf.make_tensor_proto(array)  # tensor_content
    np.testing.assert_array_equal(decode(TensorProto.FromString(theirs.SerializeToString())), array)
    typed = tf.make_tensor_proto([1, 2, 3], dtype=tf.int64)
    assert decode(TensorProto.FromString(typed.SerializeToString())).tolist() == [1, 2, 3]
    ours = from_numpy(array, name="y").SerializeToString()
    from tensorflow.core.framework import tensor_pb2

    np.testing.assert_array_equal(tf.make_ndarray(tensor_pb2.TensorProto.FromString(ours)), array)
