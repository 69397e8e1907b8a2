"""A v2 JSON body decodes to what the orjson-only path makes of it, whichever way its
``"data"`` arrays are read (cut out and parsed by simdjson, in one piece or many, the
whole document in one simdjson parse (``v2lean``), or by orjson): the same arrays
(values, dtype, shape) or the same error (class and message), for any numbers, dtypes,
shapes and hostile texts."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keepwarm.errors import InvalidInputError
from keepwarm.protocol import jsonfast, jsonio, jsonpieces, v2, v2lean

DATATYPES = ["FP32", "FP64", "FP16", "INT8", "INT32", "INT64", "UINT8", "UINT64", "BOOL"]
PAD = " " * jsonpieces.MIN_ARRAY_BYTES  # whitespace in an array: over the cut-out size


def reference(body: bytes) -> Any:
    """The orjson-only path: no simdjson anywhere (with the NaN and Infinity literals, as
    Triton reads them: ``test_v2_nonfinite``)."""
    return v2._decoded(jsonio.loads(body, max_depth=64, literals=True), memoryview(b""))


def outcome(decode: Callable[[], v2.InferRequest]) -> Any:
    try:
        request = decode()
    except InvalidInputError as exc:
        return ("error", type(exc), str(exc))
    return (
        "ok",
        {
            name: (a.dtype.str, a.shape, a.tobytes() if a.dtype.kind != "O" else a.tolist())
            for name, a in request.inputs.items()
        },
        request.id,
        request.parameters,
    )


def check(body: bytes) -> bool:
    """Every path decodes ``body`` as the reference does; whether ``v2lean`` took it (it
    declines what it is unsure of, and then the usual path answers)."""
    want = outcome(lambda: reference(body))
    assert outcome(lambda: v2.decode_request(body)) == want
    assert outcome(lambda: v2.decode_small(body, limit=1 << 30)) == want  # type: ignore[arg-type,return-value]
    lean = v2lean.decode(body, 64)
    if lean is not None:
        assert outcome(lambda: lean) == want
    return lean is not None


# Numbers as JSON text, in the spellings clients send.
integers = st.one_of(
    st.integers(-300, 300),
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([2**63 - 1, -(2**63), 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**30]),
).map(str)
floats = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: orjson.dumps(x).decode()),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.sampled_from(
        ["-0.0", "0.0", "-0", "1e5", "1E5", "1e+05", "2.5e-3", "-1.5E-300", "3.5e38",
         "3.4028235e38", "1e-320", "5e-324", "1e308", "1.7976931348623157e308", "1e300",
         "65504", "65520", "1.0000000000000002", "0.1", "9007199254740993"]
    ),
)  # fmt: skip
others = st.sampled_from(["true", "false", "null", '"1"', '"a],[b"', "{}", "[]", "[1]"])
elements = st.one_of(integers, floats, others.filter(lambda _: True))


def render(values: list[str], rows: int | None, pad: str) -> str:
    """``values`` as a flat array, or nested in ``rows`` rows (the last may be short)."""
    if rows is None:
        return "[" + pad + ",".join(values) + "]"
    size = max(1, -(-len(values) // rows))
    chunks = [values[i : i + size] for i in range(0, len(values), size)]
    return "[" + pad + ",".join("[" + ",".join(c) + "]" for c in chunks) + "]"


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    inputs = []
    for i in range(draw(st.integers(1, 2))):
        kind = draw(st.sampled_from(["ints", "floats", "mixed", "any"]))
        pick = {"ints": integers, "floats": floats, "mixed": integers | floats}.get(kind, elements)
        values = draw(st.lists(pick, min_size=0, max_size=40))
        rows = draw(st.none() | st.integers(1, 4))
        pad = draw(st.sampled_from(["", PAD, PAD + "\n"]))
        count = len(values) + draw(st.sampled_from([0, 0, 0, 1, -1]))
        shape = [count] if rows is None else [rows, max(1, count // max(rows, 1))]
        tensor = {"name": f"x{i}", "datatype": draw(st.sampled_from(DATATYPES)), "shape": shape}
        head = orjson.dumps(tensor).decode()[:-1]
        inputs.append(head + ',"data":' + render(values, rows, pad) + "}")
    return ('{"id":"r","inputs":[' + ",".join(inputs) + "]}").encode()


@settings(max_examples=400, deadline=None)
@given(bodies())
def test_any_body_decodes_as_the_orjson_path_decodes_it(body: bytes) -> None:
    check(body)


@settings(max_examples=100, deadline=None)
@given(bodies(), st.integers(0, 10_000))
def test_a_truncated_or_damaged_body_fails_or_decodes_as_the_orjson_path(
    body: bytes, cut: int
) -> None:
    check(body[: cut % (len(body) + 1)])
    at = cut % len(body)
    check(body[:at] + b"]" + body[at + 1 :])


def flat_body(text: str, datatype: str = "FP32", shape: list[int] | None = None) -> bytes:
    tensor = {"name": "x", "datatype": datatype, "shape": shape or [-1]}
    return orjson.dumps({"inputs": [tensor]})[:-3] + b',"data":' + text.encode() + b"}]}"


HOSTILE = {
    "NaN": "[" + ",".join(["NaN"] * 300) + "]",
    "Infinity": "[" + ",".join(["1.5", "Infinity"] * 150) + "]",
    "-Infinity": "[" + ",".join(["-Infinity"] * 300) + "]",
    "huge exponent": "[" + ",".join(["1e400"] * 300) + "]",
    "huge negative exponent": "[" + ",".join(["1e-400"] * 300) + "]",
    "strings": "[" + ",".join(['"1.5"'] * 300) + "]",
    "string among numbers": "[" + ",".join(["1.5"] * 200 + ['"x"'] + ["2"] * 100) + "]",
    "ragged": "[" + ",".join(["[1.5,2.5]"] * 200 + ["[1.5]"]) + "]",
    "nested in a flat one": "[" + ",".join(["1.5"] * 200 + ["[1]"]) + "]",
    "deep": "[" * 70 + "1" + "]" * 70,
    "truncated": "[" + ",".join(["1.5"] * 300),
    "trailing comma": "[" + ",".join(["1.5"] * 300) + ",]",
    "hex": "[" + ",".join(["0x10"] * 300) + "]",
    "big ints": "[" + ",".join([str(2**70)] * 300) + "]",
    "ints past int64 beside negatives": "[" + ",".join([str(2**63), "-1"] * 150) + "]",
}


@pytest.mark.parametrize("datatype", ["FP32", "INT32", "UINT64", "BOOL", "BYTES"])
@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_data_gives_the_orjson_path_result_or_error(text: str, datatype: str) -> None:
    check(flat_body(text, datatype))


def test_duplicate_keys_and_a_marker_sent_by_the_client() -> None:
    numbers = "[" + ",".join(str(x / 3) for x in range(400)) + "]"
    tensor = '{"name":"x","datatype":"FP32","shape":[400],"data":%s,"data":%s}'
    check(('{"inputs":[' + tensor % (numbers, numbers[:-1] + ",1]") + "]}").encode())
    fake = '["\\u0000keepwarm array 0"]'  # the markers' words, but not their salt
    check(flat_body(fake, "BYTES", [1]))
    check(('{"inputs":[' + tensor % (numbers, fake) + "]}").encode())


def test_an_mlp_body_is_cut_out_and_read_by_simdjson() -> None:
    """784 float32 numbers (8 KB): the ``data`` array is a span of its own."""
    x = np.random.default_rng(3).random((1, 784), dtype=np.float32)
    tensor = {"name": "x", "datatype": "FP32", "shape": [1, 784], "data": x.ravel()}
    body = orjson.dumps({"inputs": [tensor]}, option=orjson.OPT_SERIALIZE_NUMPY)
    assert len(jsonpieces._spans(body, jsonpieces.MIN_ARRAY_BYTES)) == 1
    decoded = v2.decode_small(body, limit=1 << 20)
    assert decoded is not None
    np.testing.assert_array_equal(decoded.inputs["x"], x)
    assert decoded.inputs["x"].dtype == np.float32
    check(body)


def test_threads_decode_at_once_each_with_its_own_parser() -> None:
    rng = np.random.default_rng(4)
    arrays = [rng.random(50_000 + i, dtype=np.float32) for i in range(4)]
    bodies = [
        orjson.dumps(
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [a.size], "data": a}]},
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
        for a in arrays
    ]
    barrier = threading.Barrier(4)

    def work(i: int) -> int:
        barrier.wait()  # all four decode at once
        for _ in range(10):
            got = v2.decode_request(bodies[i]).inputs["x"]
            np.testing.assert_array_equal(got, arrays[i])
        return id(jsonfast.parser_for(0))

    with ThreadPoolExecutor(4) as pool:  # an exception in a thread fails the test here
        parsers = list(pool.map(work, range(4)))
    assert len(set(parsers)) == 4


def test_a_large_document_is_parsed_by_a_parser_of_its_own() -> None:
    """simdjson keeps the capacity of the largest document it parsed: one past
    ``KEEP_PARSER_BYTES`` is parsed by a parser let go with it, not the thread's."""
    kept = jsonfast.parser_for(0)
    assert jsonfast.parser_for(jsonfast.KEEP_PARSER_BYTES) is kept
    assert jsonfast.parser_for(jsonfast.KEEP_PARSER_BYTES + 1) is not kept
    strings = ",".join(['"' + "a" * 1000 + '"'] * 400)  # whole-document parse (jsonfast)
    big = '{"inputs":[{"name":"s","datatype":"BYTES","shape":[400],"data":[' + strings + "]}]}"
    assert len(big) > jsonfast.KEEP_PARSER_BYTES
    check(big.encode())
    for digits in ("1" * (jsonfast.KEEP_PARSER_BYTES + 10), "0." + "1" * 300_000):
        check(flat_body("[" + digits + "]", "FP64"))  # one piece past the size
    assert jsonfast.parser_for(0) is kept


@pytest.mark.parametrize("max_depth", [4, 5, 6, 7])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_the_depth_limit_counts_a_nested_arrays_axes(max_depth: int, dims: int) -> None:
    x = np.arange(8 ** min(dims, 2) * 40, dtype=np.float64).reshape((-1, *[2] * (dims - 1)))
    tensor = {"name": "x", "datatype": "FP64", "shape": list(x.shape), "data": x}
    body = orjson.dumps({"inputs": [tensor]}, option=orjson.OPT_SERIALIZE_NUMPY)
    assert len(jsonpieces._spans(body, jsonpieces.MIN_ARRAY_BYTES)) == 1

    def plain() -> v2.InferRequest:
        return v2._decoded(jsonio.loads(body, max_depth=max_depth, literals=True), memoryview(b""))

    assert outcome(lambda: v2.decode_request(body, max_depth=max_depth)) == outcome(plain)


def test_strings_and_other_values_are_not_cut_out() -> None:
    """Only an array whose first element starts as a number or an array does is cut out:
    a BYTES tensor's strings go to the whole-document parse at once, not through a cut
    that could only fail."""
    for first in ('"abc"', "true", "null", "NaN", '{"b64": "AA=="}'):
        body = flat_body("[" + ",".join([first] * 300) + "]", "BYTES", [300])
        assert jsonpieces._spans(body, jsonpieces.MIN_ARRAY_BYTES) == []
        check(body)
    for first in ("-1", "0.5", "7", " [1, 2]"):
        body = flat_body("[ " + ",".join([first] * 600) + "]")
        assert len(jsonpieces._spans(body, jsonpieces.MIN_ARRAY_BYTES)) == 1
        check(body)


@pytest.mark.parametrize("pad", ["", PAD])
def test_uint64_takes_every_integer_below_2_64_exactly(pad: str) -> None:
    """numpy makes float64 of a list holding an integer past int64's range: [1, 2**63]
    was refused (float64 for a UINT64 tensor), [1, 2**64 - 1] called out of range."""
    for values in ([1, 2**63], [1, 2**64 - 1], [2**64 - 1, 0, 2**63 + 1], [[2**63], [5]]):
        rows = len(values) if isinstance(values[0], list) else None
        flat = [v for row in values for v in row] if rows else values
        text = render([str(v) for v in flat], rows, pad)
        body = flat_body(text, "UINT64", [len(flat)] if rows is None else [rows, 1])
        x = v2.decode_request(body).inputs["x"]
        assert x.dtype == np.uint64 and x.reshape(-1).tolist() == flat
        check(body)


@pytest.mark.parametrize("pad", ["", PAD])
def test_uint64_refuses_what_is_past_its_range_naming_the_input_and_range(pad: str) -> None:
    for values in (["-1", str(2**63)], ["1", str(2**64)], [str(2**63), str(2**70)], ["-1"]):
        body = flat_body(render(values, None, pad), "UINT64", [len(values)])
        with pytest.raises(
            InvalidInputError,
            match=r"input 'x': values out of range for uint64 \(\[0, 18446744073709551615\]\)",
        ):
            v2.decode_request(body)
        check(body)
    body = flat_body(render(["1", str(2**63), "0.5"], None, pad), "UINT64", [3])
    with pytest.raises(InvalidInputError, match=r"expected uint64 values, got float64"):
        v2.decode_request(body)  # a fraction stays a type error
