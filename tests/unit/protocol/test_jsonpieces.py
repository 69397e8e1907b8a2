"""Large v2 ``"data"`` arrays parsed in pieces: the same results and errors as the plain
parse, whatever the body holds, and the decoding thread gives the GIL up between pieces."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest

from keepwarm.errors import InvalidInputError
from keepwarm.protocol import jsonio, jsonpieces, v2
from support.gil import no_forced_switches, turns_while

SMALL = {"min_bytes": 64, "piece_bytes": 16}  # many pieces from a small body


@pytest.fixture
def parse() -> Iterator[Any]:
    def parse(body: bytes) -> Any:
        return jsonpieces.loads(body, max_depth=64, within="inputs", **SMALL)

    yield parse


def body_of(*data: str, **extra: str) -> bytes:
    """A v2 body with one input per ``data`` (raw JSON text), plus raw ``extra`` members."""
    inputs = ",".join(
        f'{{"name":"x{i}","datatype":"FP32","shape":[-1],"data":{text}}}'
        for i, text in enumerate(data)
    )
    members = "".join(f',"{key}":{value}' for key, value in extra.items())
    return f'{{"inputs":[{inputs}]{members}}}'.encode()


def plain(body: bytes) -> Any:
    return jsonio.loads(body, max_depth=64, arrays=True, literals=True)


def assert_same(got: Any, want: Any) -> None:
    """``got`` equals ``want``, a list and the array numpy makes of it counting as equal."""
    if isinstance(got, np.ndarray) or isinstance(want, np.ndarray):
        got, want = np.asarray(got), np.asarray(want)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    elif isinstance(got, dict):
        assert isinstance(want, dict) and got.keys() == want.keys()
        for key in got:
            assert_same(got[key], want[key])
    elif isinstance(got, list):
        assert isinstance(want, list) and len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            assert_same(a, b)
    else:  # NaN (a literal, read as Triton reads it) equals NaN here
        assert (got == want or (got != got and want != want)) and type(got) is type(want)


def numbers(values: list[Any]) -> str:
    return (
        "["
        + ",".join(orjson.dumps(v).decode() if type(v) is not int else str(v) for v in values)
        + "]"
    )


CASES = {
    "floats": numbers(np.random.default_rng(0).random(300).tolist()),
    "integers": numbers(list(range(-150, 150))),
    "integers then floats": numbers([*range(60), *(x / 7 for x in range(60))]),
    "spaced": "[ " + " ,\n\t".join(str(x) for x in range(100)) + " ]",
    "exponents": numbers([1e-300, -2.5e10, 0.0, -0.0, 1e18] * 20),
    "int64 edges": numbers([2**63 - 1, -(2**63)] * 20),
}


@pytest.mark.parametrize("text", CASES.values(), ids=CASES.keys())
def test_large_arrays_come_back_as_the_arrays_numpy_makes_of_the_lists(
    parse: Any, text: str
) -> None:
    body = body_of(text, text, "[1, 2]", parameters='{"data": [1, 2, 3]}')
    (start, end), _ = jsonpieces._spans(body, SMALL["min_bytes"])
    assert jsonpieces._numbers(body, start, end, SMALL["piece_bytes"]) is not None  # in pieces
    assert_same(parse(body), plain(body))


HOSTILE = {
    "nested": numbers([[x, x] for x in range(100)]),
    "strings": numbers([str(x) for x in range(100)]),
    "bools": numbers([True, False] * 50),
    "null inside": numbers([*range(60), None, *range(60)]),
    "past int64": numbers([2**64, *range(100)]),
    "past int64, negative": numbers([-(2**63) - 1, *range(100)]),
    "mixed with a string holding ] and ,": numbers([*range(60), "a],[b", *range(60)]),
    "trailing comma": "[" + ",".join(str(x) for x in range(100)) + ",]",
    "empty element": "[" + ",".join(str(x) for x in range(50)) + ",," + "1" * 40 + "]",
    "leading zeros": "[" + ",".join(f"0{x}" for x in range(100)) + "]",
    "bare dot": "[" + ",".join(f"{x}." for x in range(100)) + "]",
    "plus sign": "[" + ",".join(f"+{x}" for x in range(100)) + "]",
    "NaN": "[" + ",".join(["NaN"] * 100) + "]",
    "floats past 2**63": numbers([1e308, -1e19, *range(100)]),
    "huge exponent": "[" + ",".join(["1e400"] * 100) + "]",
    "unterminated": "[" + ",".join(str(x) for x in range(100)),
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_anything_else_is_parsed_the_plain_way(parse: Any, text: str) -> None:
    body = body_of(text)
    try:
        want = plain(body)
    except InvalidInputError as exc:
        with pytest.raises(InvalidInputError) as got:
            parse(body)
        assert str(got.value) == str(exc)
        return
    assert_same(parse(body), want)


def test_a_marker_sent_by_the_client_is_its_own_data(parse: Any) -> None:
    """The markers put in place of the arrays are strings a client may send too: such a
    body is parsed the plain way."""
    text = CASES["floats"]
    for fake in ('["\\u0000keepwarm array 0"]', '["\\u0000keepwarm array 1"]'):
        body = body_of(text, fake, text)
        assert_same(parse(body), plain(body))


def test_data_keys_outside_inputs_and_escaped_keys(parse: Any) -> None:
    text = CASES["integers"]
    body = f'{{"inputs":[{{"name":"x","data":[1]}}],"other":{{"data":{text}}},"k\\"data":{text}}}'
    assert_same(parse(body.encode()), plain(body.encode()))


def test_the_depth_limit_still_holds(parse: Any) -> None:
    text = CASES["floats"]
    deep = "[" * 70 + "]" * 70
    with pytest.raises(InvalidInputError, match="nested deeper than 64"):
        parse(body_of(deep, text))


def test_v2_decodes_a_large_body_as_before() -> None:
    """Through ``v2.decode_request`` with the real thresholds: a 1.6 MB MobileNetV2 body."""
    x = np.random.default_rng(1).random((1, 224, 224, 3), dtype=np.float32)
    tensor = {"name": "image", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel()}
    body = orjson.dumps({"inputs": [tensor]}, option=orjson.OPT_SERIALIZE_NUMPY)
    decoded = v2.decode_request(body)
    np.testing.assert_array_equal(decoded.inputs["image"], x)
    assert decoded.inputs["image"].dtype == np.float32


def test_the_decoding_thread_lets_another_thread_run_between_pieces() -> None:
    """With forced switches off (a switch interval of 10 s), a thread that waits for the
    GIL runs only when the holder gives it up: during orjson's parse it cannot run, during
    a parse in pieces it runs between them (a sleep(0) after every piece). (The event
    loop is that thread.)"""
    x = np.random.default_rng(2).random(2 * 150528, dtype=np.float32)
    tensor = {"name": "image", "datatype": "FP32", "shape": [x.size], "data": x}
    body = orjson.dumps({"inputs": [tensor]}, option=orjson.OPT_SERIALIZE_NUMPY)

    def pieces() -> Any:
        return jsonpieces.loads(body, max_depth=64, within="inputs")

    with no_forced_switches():
        whole = turns_while(lambda: orjson.loads(body))
        every_piece = max(turns_while(pieces) for _ in range(3))  # as in test_tfpieces
    assert whole <= 3  # the method sees a parse that never gives the GIL up
    assert every_piece >= 25  # about 50 pieces of 64 KiB


def test_a_number_longer_than_a_pieces_buffer_is_read_in_a_buffer_of_its_own(
    parse: Any,
) -> None:
    """A piece ends at the first comma past its size: a token longer than the buffer's
    slack (``SCRATCH_SLACK``, 1 KiB) makes a piece that needs a larger buffer."""
    long = "0." + "3" * 4096
    for text in (f"[1,2,{long},4,5]", f"[{long},{long}]", f"[{long}]"):
        body = body_of(text, text)
        assert_same(parse(body), plain(body))


def test_a_large_array_is_parsed_without_a_copy_of_the_whole() -> None:
    """The numbers take memory (one float64 array per piece, then one joined); the text
    is not copied whole besides (it was, to be cut in place: 1.6 MB for an image, most
    of the cost of a body whose copy touched fresh memory)."""
    x = np.random.default_rng(3).random(150528, dtype=np.float32)
    body = body_of(orjson.dumps(x, option=orjson.OPT_SERIALIZE_NUMPY).decode())
    ((start, end),) = jsonpieces._spans(body, jsonpieces.MIN_ARRAY_BYTES)
    jsonpieces._pieces(body, start, end, jsonpieces.PIECE_BYTES)  # parsers made
    tracemalloc.start()
    try:
        array = jsonpieces._pieces(body, start, end, jsonpieces.PIECE_BYTES)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert array is not None
    np.testing.assert_array_equal(array.astype(np.float32), x)
    assert peak < 2 * array.nbytes + (end - start) // 4
