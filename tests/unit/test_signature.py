"""Signature.coerce: the one place inputs are checked against a model's signature."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import keepwarm
from keepwarm.errors import InvalidInputError
from keepwarm.signature import Signature, TensorSpec
from support.onnx_graphs import identity, two_batched_inputs

F32 = np.dtype("float32")


def one_input(dtype: str, shape: tuple[int | None, ...] | None = (None,)) -> Signature:
    spec = TensorSpec("x", np.dtype(dtype), shape)
    return Signature(inputs=(spec,), outputs=(TensorSpec("y", np.dtype(dtype), shape),))


def refused(signature: Signature, value: Any) -> str:
    with pytest.raises(InvalidInputError) as info:
        signature.coerce({"x": value})
    return info.value.message


def test_an_int64_that_does_not_fit_an_int32_input_is_refused_not_wrapped(
    tmp_path: Path,
) -> None:
    model = keepwarm.load(identity(tmp_path / "int32.onnx"), cache=keepwarm.ModelCache())
    big = np.array([3, 2**33 + 5], np.int64)
    with pytest.raises(InvalidInputError) as info:
        model.predict(big)  # wrapped, 2**33 + 5 would have been answered as 5
    message = info.value.message
    assert "'x'" in message and "int32" in message and "[3, 8589934597]" in message, message
    assert model.predict(np.array([5, -7], np.int64))["y"].tolist() == [5, -7]  # they fit


@pytest.mark.parametrize(
    ("dtype", "bad", "good"),
    [
        ("int8", [-129, 0], [-128, 127]),
        ("int16", [2**15], [-(2**15), 2**15 - 1]),
        ("uint8", [-1, 3], [0, 255]),
        ("uint8", [256], [0]),
        ("uint32", [-5], [2**32 - 1]),
    ],
)
def test_narrowing_integer_casts_only_when_the_values_survive(
    dtype: str, bad: list[int], good: list[int]
) -> None:
    signature = one_input(dtype)
    message = refused(signature, np.array(bad, np.int64))
    assert "'x'" in message and dtype in message and str(min(bad)) in message, message
    assert f"{np.iinfo(dtype).min}..{np.iinfo(dtype).max}" in message, message
    out = signature.coerce({"x": np.array(good, np.int64)})["x"]
    assert out.dtype == np.dtype(dtype) and out.tolist() == good
    assert signature.coerce({"x": np.zeros(0, np.int64)})["x"].dtype == np.dtype(dtype)


def test_uint64_beyond_int64_and_python_ints_beyond_int32_are_refused() -> None:
    assert "9223372036854775808" in refused(one_input("int64"), np.array([2**63], np.uint64))
    assert "int32" in refused(one_input("int32"), [1, 2**40])
    assert one_input("int64").coerce({"x": np.array([7], np.uint32)})["x"].tolist() == [7]


def test_floats_are_not_rounded_into_integer_inputs() -> None:
    message = refused(one_input("int32"), np.array([1.0, 2.0]))
    assert "expected dtype int32, got float64" in message and "round" in message, message
    assert "int32" in refused(one_input("int32"), [1.5])


def test_float64_to_float32_is_accepted_and_a_list_of_ints_feeds_a_float_input() -> None:
    signature = one_input("float32", (None, 2))
    assert signature.coerce(np.ones((1, 2)))["x"].dtype == F32
    out = signature.coerce([[1, 2], [3, 4]])["x"]  # JSON clients send 1 for 1.0
    assert out.dtype == F32 and out.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert "expected dtype float32" in refused(signature, np.array([[1, 2]], np.int64))


def test_a_ragged_list_is_an_invalid_input_naming_it() -> None:
    for dtype in ("float32", "int64", "object"):
        message = refused(one_input(dtype, (None, None)), [[1, 2], [3]])
        assert "'x'" in message and "ragged" in message, message


def test_inputs_sharing_an_unknown_leading_dimension_must_agree(tmp_path: Path) -> None:
    cache = keepwarm.ModelCache(warmup=False)
    model = cache.load(two_batched_inputs(tmp_path / "shared.onnx"))
    a, b = np.zeros((2, 4), np.float32), np.zeros(3, np.int64)
    with pytest.raises(InvalidInputError) as info:
        model.predict({"a": a, "b": b})  # the runtime would answer both, with 2 and 3 rows
    assert "'a'" in info.value.message and "'b'" in info.value.message
    assert "a: 2" in info.value.message and "b: 3" in info.value.message, info.value.message
    assert model.predict({"a": a, "b": b[:2]})["b_out"].shape == (2,)
    # Different symbols in the ONNX graph: independent sizes, accepted.
    free = cache.load(two_batched_inputs(tmp_path / "free.onnx", b_dim="M"))
    assert free.predict({"a": a, "b": b})["b_out"].shape == (3,)


def test_a_signature_without_symbols_shares_every_unknown_leading_dimension() -> None:
    signature = Signature(
        inputs=(
            TensorSpec("a", F32, (None, 4)),
            TensorSpec("b", F32, (None,)),
            TensorSpec("c", F32, (3,)),
            TensorSpec("d", F32, None),
        ),
        outputs=(TensorSpec("y", F32, (None,)),),
    )
    good = {"a": np.zeros((2, 4), F32), "b": np.zeros(2, F32), "c": np.zeros(3, F32)}
    good["d"] = np.zeros((5, 5), F32)  # unknown rank: not part of the group
    assert signature.coerce(good) == good
    with pytest.raises(InvalidInputError, match="leading"):
        signature.coerce({**good, "b": np.zeros(1, F32)})
    independent = replace(signature, batch_groups=())  # a runtime that knows better says so
    assert independent.coerce({**good, "b": np.zeros(1, F32)})["b"].shape == (1,)


def test_the_common_case_returns_the_callers_arrays() -> None:
    signature = one_input("float32", (None, 2))
    x = np.ones((3, 2), F32)
    assert signature.coerce(x)["x"] is x
    assert signature.coerce({"x": x})["x"] is x


def test_widen_json_leaves_bad_input_for_coerce_to_name() -> None:
    signature = one_input("float32", (None, None))
    for bad in ({"x": [[1, 2], [3]]}, [[1, 2], [3]]):
        with pytest.raises(InvalidInputError, match=r"'x'.*ragged"):
            signature.coerce(signature.widen_json(bad))  # type: ignore[arg-type]
    widened = signature.widen_json([[1, 2]])  # type: ignore[arg-type]
    assert signature.coerce(widened)["x"].dtype == F32


SPEC_SHAPES = [(1, 4), (None, 4), (None, 2, 3), (), (None,), (2, None), None]
ARRAY_SHAPES = [(1, 4), (3, 1, 4), (4,), (2, 4), (1, 2, 3), (5, 2, 3), (2, 3), (), (1,), (7,)]


@pytest.mark.parametrize("want", SPEC_SHAPES)
def test_one_array_is_accepted_exactly_when_its_shape_matches(
    want: tuple[int | None, ...] | None,
) -> None:
    """The one-array shortcut (one tuple compare) agrees with the full shape check: a
    shape with the right sizes after the first but another rank, or the whole known shape
    after an extra axis, is refused."""
    signature = one_input("float32", want)
    for got in ARRAY_SHAPES:
        x = np.zeros(got, F32)
        fits = want is None or (
            len(want) == len(got)
            and all(w is None or w == g for w, g in zip(want, got, strict=True))
        )
        if fits:
            assert signature.coerce(x)["x"] is x, (want, got)
        else:
            with pytest.raises(InvalidInputError):
                signature.coerce(x)


def test_a_string_input_is_named_string_in_messages_not_numpy_object() -> None:
    signature = one_input("object")
    assert signature.inputs[0].describe() == "x: string[-1]"
    message = refused(signature, np.array([[b"a"]], dtype=object))
    assert "expected shape string[-1]" in message and "object" not in message
    assert "expected dtype string, got float32" in refused(signature, np.ones(1, np.float32))


def test_a_masked_array_is_refused_not_read_without_its_mask() -> None:
    signature = one_input("float32", (None, 2))
    masked = np.ma.masked_array(np.ones((1, 2), np.float32), mask=[[True, False]])
    for given in (masked, {"x": masked}):  # the mask was dropped: the model read the 1.0
        with pytest.raises(InvalidInputError, match=r"'x': a masked array.*filled"):
            signature.coerce(given)
    assert signature.coerce(masked.filled(0.0))["x"].tolist() == [[0.0, 1.0]]
