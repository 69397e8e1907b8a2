"""``bench/grpc_wire.py``, the hand-framed gRPC client of the protocol benchmarks, against
a real grpcio server: answers arrive whole (also past HTTP/2's default frame size and
flow-control windows), a failed call is None and the connection goes on serving."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from grpc_wire import WireChannel, hpack_int

ECHO = "/test.Bench/Echo"
DIGEST = "/test.Bench/Digest"
REFUSE = "/test.Bench/Refuse"


def _refuse(request: bytes, context: Any) -> bytes:
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "refused")
    raise AssertionError("abort returned")


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(lambda request, _: request),
        "Digest": grpc.unary_unary_rpc_method_handler(
            lambda request, _: hashlib.sha256(request).digest()
        ),
        "Refuse": grpc.unary_unary_rpc_method_handler(_refuse),
    }
    pool = ThreadPoolExecutor(2)
    server = grpc.server(
        pool,
        handlers=[grpc.method_handlers_generic_handler("test.Bench", handlers)],
        options=[("grpc.max_receive_message_length", 16 * 1024 * 1024)],
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None).wait()
        pool.shutdown()


def run(address: str, calls: list[tuple[str, bytes]]) -> list[bytes | None]:
    async def go() -> list[bytes | None]:
        channel = WireChannel(address)
        await channel.connect()
        try:
            return [await channel.call(path, message) for path, message in calls]
        finally:
            channel.close()

    return asyncio.run(asyncio.wait_for(go(), 60))  # a flow-control stall fails, not hangs


def test_calls_on_one_connection_get_their_own_answers(address: str) -> None:
    messages = [f"request {i}".encode() for i in range(40)]
    assert run(address, [(ECHO, m) for m in messages]) == messages


def test_a_message_past_the_default_windows_arrives_whole(address: str) -> None:
    big = bytes(range(256)) * (3 * 1024 * 1024 // 256)  # 3 MB: many frames, window updates
    answers = run(address, [(DIGEST, big), (ECHO, big), (DIGEST, big)])
    assert answers[0] == answers[2] == hashlib.sha256(big).digest()
    assert answers[1] == big


def test_a_failed_call_is_none_and_the_connection_goes_on(address: str) -> None:
    assert run(address, [(REFUSE, b"x"), (ECHO, b"after"), (REFUSE, b""), (ECHO, b"")]) == [
        None,
        b"after",
        None,
        b"",
    ]


def test_an_unknown_method_is_none(address: str) -> None:
    assert run(address, [("/test.Bench/Nothing", b"x"), (ECHO, b"y")]) == [None, b"y"]


@pytest.mark.parametrize(
    ("value", "bits", "encoded"),
    [(10, 5, b"\x0a"), (1337, 5, b"\x1f\x9a\x0a"), (42, 8, b"\x2a"), (15, 4, b"\x0f\x00")],
)
def test_hpack_integers(value: int, bits: int, encoded: bytes) -> None:
    assert hpack_int(value, bits) == encoded  # RFC 7541 C.1
