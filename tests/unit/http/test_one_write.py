"""``OneWriteProtocol``: uvicorn on uvloop, each response written to the socket once.

A real server on a free port, real client sockets; the protocol's transport is wrapped to
record what was written, so that a response split in two writes fails the test."""

from __future__ import annotations

import asyncio
import gc

import pytest

from keepwarm.http.held_head import JOIN_BYTES
from keepwarm.http.messages import Message, Receive, Scope, Send
from support.one_write import exchange, post, read_response, run


async def answer(scope: Scope, receive: Receive, send: Send) -> None:
    """The body read (100-continue), then the answer: ``/big`` a large body, ``/fail``
    raises after the header block, ``/stream`` three chunks, else the body echoed."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    path = scope["path"]
    data = b"x" * (JOIN_BYTES + 1) if path == "/big" else b"echo:" + body
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for chunk in (b"a", b"b", b"c"):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    headers = [(b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if path == "/fail":
        raise RuntimeError("after the header block")
    await send({"type": "http.response.body", "body": data})


def test_a_response_is_written_once() -> None:
    got: list[bytes] = []

    async def talk(port: int) -> None:
        got.append(await exchange(port, post("/", b"hello")))

    writes = run(answer, talk)
    assert got[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert got[0].endswith(b"\r\n\r\necho:hello")
    assert writes == got


def test_a_large_body_is_written_beside_its_header_block_in_one_call() -> None:
    got: list[bytes] = []

    async def talk(port: int) -> None:
        got.append(await exchange(port, post("/big", b"")))

    writes = run(answer, talk)
    assert got[0].endswith(b"x" * (JOIN_BYTES + 1))
    assert writes == got


def test_a_head_response_sends_its_header_block_at_its_end() -> None:
    got: list[bytes] = []

    async def talk(port: int) -> None:
        got.append(await exchange(port, b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\n"))

    writes = run(answer, talk)
    assert got[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: 5\r\n" in got[0]
    assert writes == got


def test_100_continue_goes_first_then_the_response_in_one_write() -> None:
    got: list[bytes] = []

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = b"POST / HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 3\r\n\r\n"
        writer.write(request)
        got.append(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5))
        writer.write(b"abc")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        got.append(head + await reader.readexactly(8))
        writer.close()

    writes = run(answer, talk)
    assert got[0] == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert got[1].endswith(b"echo:abc")
    assert writes == got


def test_the_header_block_is_sent_before_a_failing_app_closes_the_connection() -> None:
    got: list[bytes] = []

    async def talk(port: int) -> None:
        got.append(await exchange(port, post("/fail", b""), until_eof=True))

    writes = run(answer, talk)
    assert got[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert got[0].endswith(b"\r\n\r\n")
    assert writes == got


def test_a_streamed_response_sends_its_header_block_with_the_first_chunk() -> None:
    got: list[bytes] = []

    async def talk(port: int) -> None:
        request = b"GET /stream HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        got.append(await exchange(port, request, until_eof=True))

    writes = run(answer, talk)
    assert got[0].endswith(b"\r\n\r\n1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n")
    assert len(writes) == 4  # the header block with "a", then "b", "c" and the end
    assert b"".join(writes) == got[0]


def test_pipelined_requests_are_answered_in_order_each_in_one_write() -> None:
    got: list[bytes] = []

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/", b"one") + post("/", b"two"))
        for _ in range(2):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            got.append(head + await reader.readexactly(8))
        writer.close()

    writes = run(answer, talk)
    assert [g[-8:] for g in got] == [b"echo:one", b"echo:two"]
    assert writes == got


@pytest.mark.parametrize("message", [{"type": "http.response.body", "body": b"x"}])
def test_a_body_before_the_header_block_is_still_refused(message: Message) -> None:
    """uvicorn's own checks stand: a body first is an error (500), one write."""

    async def wrong(scope: Scope, receive: Receive, send: Send) -> None:
        await send(message)

    got: list[bytes] = []

    async def talk(port: int) -> None:
        got.append(await exchange(port, post("/", b""), until_eof=True))

    writes = run(wrong, talk)
    assert got[0].startswith(b"HTTP/1.1 500 ")
    assert writes == got


def test_answered_cycles_are_freed_without_the_garbage_collector() -> None:
    """A cycle and its transport let go of each other once the header block is seen: of
    three requests on one connection only the last cycle (its connection's, closed at the
    end in a cycle of uvicorn's own) is left to the collector."""

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(3):
            writer.write(post("/", b"hi"))
            assert (await read_response(reader)).endswith(b"echo:hi")
        writer.close()

    gc.collect()
    gc.disable()
    try:
        run(answer, talk)
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        left = [type(o).__name__ for o in gc.garbage].count("RequestResponseCycle")
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left <= 1
