"""Large TF Serving tensors parsed in pieces: the same tensors and errors as the plain
parse, whatever the body holds, and the decoding thread gives the GIL up between pieces."""

from __future__ import annotations

import json
import threading
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keepwarm.errors import InvalidInputError, KeepwarmError
from keepwarm.protocol import jsonio, jsonpieces, tfpieces, tfserving
from keepwarm.signature import Signature, TensorSpec
from support.gil import no_forced_switches, turns_while

F32, I32, TEXT = np.dtype(np.float32), np.dtype(np.int32), np.dtype(object)


@pytest.fixture(autouse=True)
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many pieces from small bodies (the real sizes are tested at the end)."""
    monkeypatch.setattr(tfpieces, "MIN_ARRAY_BYTES", 48)
    monkeypatch.setattr(tfpieces, "PIECE_BYTES", 16)


def outcome(parse: Callable[[], Any]) -> Any:
    try:
        return parse()
    except KeepwarmError as exc:
        return ("error", type(exc), str(exc))


def assert_same(got: Any, want: Any) -> None:
    """Equal, a list and the array numpy makes of it counting as equal."""
    if isinstance(got, np.ndarray) or isinstance(want, np.ndarray):
        got, want = np.asarray(got), np.asarray(want)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    elif isinstance(got, dict):
        assert isinstance(want, dict) and got.keys() == want.keys()
        for key in got:
            assert_same(got[key], want[key])
    elif isinstance(got, list | tuple):
        assert isinstance(want, type(got)) and len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            assert_same(a, b)
    else:
        assert got == want and type(got) is type(want)


def check(body: bytes, signature: Signature) -> None:
    """``tfpieces.loads`` and ``parse_predict(...).inputs`` against the plain parse (with
    TF Serving's NaN and Infinity literals, as TF Serving's plain parse reads them)."""
    assert_same(
        outcome(lambda: tfpieces.loads(body, max_depth=64)),
        outcome(lambda: jsonio.loads(body, max_depth=64, literals=True)),
    )
    plain = outcome(
        lambda: tfserving._parse(body, 64, jsonio.loads(body, max_depth=64, literals=True))
    )
    if isinstance(plain, tuple):  # the body itself is refused
        assert_same(outcome(lambda: tfserving.parse_predict(body)), plain)
        return
    assert_same(
        outcome(lambda: tfserving.parse_predict(body).inputs(signature)),
        outcome(lambda: plain.inputs(signature)),
    )


def arrays(dims: int) -> st.SearchStrategy[Any]:
    """Nested lists of numbers, rectangular or not, sometimes with something else."""
    leaf = (
        st.integers(-(2**63), 2**63 - 1)
        | st.floats(-1e18, 1e18)
        | st.sampled_from([0, -0.0, 1e-300, 2**53 + 1])
    )
    odd = st.none() | st.booleans() | st.text(max_size=2) | st.integers(2**63, 2**64)
    level: st.SearchStrategy[Any] = leaf | odd if dims == 1 else leaf
    for _ in range(dims):
        level = st.lists(level, min_size=0, max_size=4)
    return level


WAYS: dict[str, Callable[[Any], bytes]] = {
    "compact": lambda v: json.dumps(v, separators=(",", ":")).encode(),  # ints past 64 bits
    "json spaced": lambda v: json.dumps(v).encode(),
    "json indented": lambda v: json.dumps(v, indent=1).encode(),
}
SIGNATURES = {
    "one float": Signature(inputs=(TensorSpec("x", F32, None),), outputs=()),
    "one int32": Signature(inputs=(TensorSpec("x", I32, None),), outputs=()),
    "one text": Signature(inputs=(TensorSpec("x", TEXT, None),), outputs=()),
    "two": Signature(inputs=(TensorSpec("x", F32, None), TensorSpec("z", I32, None)), outputs=()),
}


def bodies() -> st.SearchStrategy[tuple[Any, Callable[[Any], bytes]]]:
    value = st.integers(1, 4).flatmap(arrays)
    rectangular = st.integers(1, 4).flatmap(
        lambda d: st.lists(st.integers(1, 4), min_size=d, max_size=d).flatmap(
            lambda shape: st.builds(
                lambda flat: np.asarray(flat).reshape(shape).tolist(),
                st.lists(
                    st.integers(-(2**40), 2**40) | st.floats(-1e18, 1e18),
                    min_size=int(np.prod(shape)),
                    max_size=int(np.prod(shape)),
                ),
            )
        )
    )
    tensor = rectangular | value
    document = st.one_of(
        st.builds(lambda t: {"instances": t}, tensor),
        st.builds(lambda t: {"inputs": t, "signature_name": ""}, tensor),
        st.builds(lambda a, b: {"inputs": {"x": a, "z": b}}, tensor, tensor),
        st.builds(lambda t: {"instances": [{"x": t}]}, tensor),
        st.builds(lambda t: {"instances": t, "inputs": t}, tensor),
    )
    return st.tuples(document, st.sampled_from(list(WAYS.values())))


@settings(max_examples=400, deadline=None)
@given(bodies(), st.sampled_from(list(SIGNATURES.values())))
def test_pieces_give_what_the_plain_parse_gives(
    case: tuple[Any, Callable[[Any], bytes]], signature: Signature
) -> None:
    document, dumps = case
    check(dumps(document), signature)


def test_a_rectangular_tensor_comes_back_as_an_array_in_pieces() -> None:
    x = np.random.default_rng(0).random((2, 5, 4, 3))
    for dumps in WAYS.values():
        body = dumps({"instances": x.tolist(), "signature_name": "serving_default"})
        found = tfpieces.loads(body, max_depth=64)
        assert isinstance(found["instances"], np.ndarray)  # not the plain path
        check(body, SIGNATURES["one float"])


HOSTILE = {
    "ragged": "[[1,2,3],[4,5],[6,7,8]]",
    "ragged, same counts": "[[1,2,3,4],[5],[6,7,8]]",
    "empty row": "[[1,2,3,4,5,6],[],[7,8,9,10,11,12]]",
    "mixed depth": "[[1,2,3,4],5,[6,7,8,9]]",
    "trailing comma": "[" + ",".join(str(x) for x in range(30)) + ",]",
    "empty element": "[" + ",".join(str(x) for x in range(30)) + ",,1]",
    "two numbers in a slot": "[" + ",".join(str(x) for x in range(30)) + ",1 2]",
    "NaN": "[" + ",".join(["NaN"] * 30) + "]",
    "true": "[" + ",".join(["true"] * 30) + "]",
    "plus sign": "[" + ",".join(f"+{x}" for x in range(30)) + "]",
    "huge exponent": "[" + ",".join(["1e400"] * 30) + "]",
    "past int64": "[" + ",".join([str(2**64)] + [str(x) for x in range(30)]) + "]",
    "unterminated": "[" + ",".join(str(x) for x in range(30)),
    "too deep": "[" * 70 + "1" + "]" * 70,
    "deep but in bounds": "[" * 60 + ",".join(str(x) for x in range(30)) + "]" * 60,
    "a marker sent as data": '["\\u0000keepwarm array 0", ' + ",".join("1" * 30) + "]",
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.parametrize("key", ["instances", "inputs"])
def test_anything_else_gives_the_plain_result_or_error(key: str, text: str) -> None:
    for body in (f'{{"{key}": {text}}}', f'{{"{key}": {text}, "signature_name": "a"}}'):
        for signature in SIGNATURES.values():
            check(body.encode(), signature)


def test_duplicate_keys_and_keys_in_strings() -> None:
    big = "[" + ",".join(str(x) for x in range(40)) + "]"
    for body in (
        f'{{"instances": {big}, "instances": [[1.5]]}}',
        f'{{"instances": [[1.5]], "instances": {big}}}',
        f'{{"signature_name": "\\"inputs\\": {big}", "instances": {big}}}',
        f'{{"inputs": {{"x": {big}, "x": {big}}}}}',
        f'{{"other": {big}, "instances": {big}}}',
    ):
        check(body.encode(), SIGNATURES["one float"])


def test_a_real_image_at_the_real_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()
    x = np.random.default_rng(1).random((1, 224, 224, 3), dtype=np.float32)
    body = orjson.dumps({"instances": x.tolist()})
    assert isinstance(tfpieces.loads(body, max_depth=64)["instances"], np.ndarray)
    got = tfserving.parse_predict(body).inputs(SIGNATURES["one float"])["x"]
    assert got.dtype == F32
    np.testing.assert_array_equal(got, x)


def test_the_decoding_thread_lets_another_thread_run_between_pieces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With forced switches off (a switch interval of 10 s), a thread waiting for the GIL
    runs only when the holder gives it up: never during orjson's parse, between pieces
    here (a sleep(0) after every piece). (The event loop is that thread.)"""
    monkeypatch.undo()
    x = np.random.default_rng(2).random((1, 224, 224, 3), dtype=np.float32)
    body = orjson.dumps({"instances": x.tolist()})

    with no_forced_switches():
        whole = turns_while(lambda: orjson.loads(body))
        # the most of three runs: on a loaded machine a run may see the waiting thread
        # never scheduled in time to take a turn it was offered
        pieces = max(turns_while(lambda: tfserving.parse_predict(body)) for _ in range(3))
    assert whole <= 3  # a parse that never gives the GIL up
    assert pieces >= 25  # about 45 pieces of 64 KiB


def test_errors_are_typed() -> None:
    with pytest.raises(InvalidInputError, match="malformed JSON"):
        tfpieces.loads(b'{"instances": [' + b"1," * 40 + b"}", max_depth=64)


def test_at_most_one_large_array_per_core_is_decoded_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """v2 and TF Serving decodes share ``jsonpieces.DECODERS``: with two places, two
    decodes run and a third waits until one ends."""
    monkeypatch.setattr(jsonpieces, "DECODERS", threading.BoundedSemaphore(2))
    lock, active, most = threading.Lock(), [0], [0]
    two, third, release = threading.Event(), threading.Event(), threading.Event()

    def held(real: Callable[..., Any]) -> Callable[..., Any]:
        def pieces(*args: Any) -> Any:
            with lock:
                active[0] += 1
                most[0] = max(most[0], active[0])
                if active[0] == 2:
                    two.set()
                if active[0] > 2:
                    third.set()
            release.wait(30)
            with lock:
                active[0] -= 1
            return real(*args)

        return pieces

    monkeypatch.setattr(jsonpieces, "_pieces", held(jsonpieces._pieces))
    monkeypatch.setattr(tfpieces, "_pieces", held(tfpieces._pieces))
    flat = "[" + ",".join(str(x / 3) for x in range(60)) + "]"
    v2_body = f'{{"inputs":[{{"name":"x","data":{flat}}}]}}'.encode()
    tf_body = f'{{"instances": {flat}}}'.encode()
    decodes = [
        lambda: jsonpieces.loads(v2_body, max_depth=64, within="inputs", min_bytes=48),
        lambda: tfpieces.loads(tf_body, max_depth=64),
    ] * 2
    threads = [threading.Thread(target=decode) for decode in decodes]
    for thread in threads:
        thread.start()
    assert two.wait(30)
    assert not third.wait(0.3)  # the others wait for a place (a third would enter at once)
    release.set()
    for thread in threads:
        thread.join(30)
    assert most[0] == 2


def test_an_image_is_parsed_without_a_copy_of_its_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """The numbers take memory (a float64 array per piece, then one joined); the
    tensor's text is read where it is in the body, not copied whole first (1.7 MB for
    this image: the copy took more memory at its peak than the numbers' pieces)."""
    monkeypatch.undo()  # the real sizes
    x = np.random.default_rng(3).random((1, 224, 224, 3), dtype=np.float32)
    body = orjson.dumps({"instances": x}, option=orjson.OPT_SERIALIZE_NUMPY)
    tfpieces.loads(body, max_depth=64)  # parsers made
    tracemalloc.start()
    try:
        got = tfpieces.loads(body, max_depth=64)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(got["instances"].astype(np.float32), x)
    assert peak < 2 * got["instances"].nbytes + len(body) // 2
