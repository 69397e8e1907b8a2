"""The inference routes' lean path (``http/lean.py``): a resolved v2 infer or TF Serving
predict with a small declared body is answered without uvicorn's request cycle, and its
answers are byte for byte those of the handler path: the same requests sent to a server
with the lean path and to one without it (each on one keep-alive connection, over the
"echo" model, batching off and on) get the same bytes back, and the first server counts
the requests that took the lean path."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from keepwarm.http import HttpApp
from keepwarm.http.lean import LEAN_BODY_BYTES, LeanCycle
from keepwarm.http.protocol import OneWriteProtocol
from keepwarm.http.timers import Limits
from support.echo_app import echo_app
from support.one_write import post, read_response, run

V2 = "/v2/models/echo/infer"
TF = "/v1/models/echo:predict"
GOOD = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4],
                                 "data": [1, 2, 3, 4, 5, 6, 7, 8]}]})  # fmt: skip
WRONG_SHAPE = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [3],
                                        "data": [1, 2, 3]}]})  # fmt: skip
Talk = Callable[[int], Awaitable[None]]


@pytest.fixture(params=["", "[batching]\nmax_batch_size = 8\n"], ids=["plain", "batched"])
def app(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[HttpApp]:
    with echo_app(tmp_path, request.param) as app:
        yield app


def served(app: HttpApp, talk: Talk, *, lean: bool, limits: Limits | None = None) -> int:
    """``talk(port)`` against ``app`` served as ``keepwarm serve`` serves it (``lean``:
    with the lean path); how many requests took the lean path."""
    made: list[OneWriteProtocol] = []

    class Served(OneWriteProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            given = {"lean": app} if lean else {}
            super().__init__(*args, early=app.early_answer, **given, **kwargs)
            made.append(self)

    run(app, talk, base=Served, limits=limits)
    return sum(p.lean_requests for p in made)


def both(app: HttpApp, requests: list[bytes]) -> tuple[list[bytes], list[bytes], int]:
    """The answers to ``requests`` sent one after another on one connection, with and
    without the lean path, and how many took it."""

    def talker(out: list[bytes]) -> Talk:
        async def talk(port: int) -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for request in requests:
                writer.write(request)
                out.append(await read_response(reader))
            writer.close()

        return talk

    lean: list[bytes] = []
    plain: list[bytes] = []
    count = served(app, talker(lean), lean=True)
    served(app, talker(plain), lean=False)
    return lean, plain, count


def test_resolved_inference_requests_take_the_lean_path_with_the_same_answers(
    app: HttpApp,
) -> None:
    tf = orjson.dumps({"instances": [[1, 2, 3, 4]]})
    requests = [post(V2, GOOD), post(V2, GOOD), post(TF, tf), post(TF, tf), post(V2, GOOD)]
    lean, plain, count = both(app, requests)
    assert lean == plain
    assert lean[1].startswith(b"HTTP/1.1 200 OK\r\n")
    assert orjson.loads(lean[1].partition(b"\r\n\r\n")[2])["outputs"][0]["data"] == [1.0, 1.0]
    assert count == 3  # each path resolved by its first request, then lean


@pytest.mark.parametrize(
    "request_bytes",
    [
        post(V2, b"{not json"),
        post(V2, WRONG_SHAPE),
        post(V2, b""),
        post(V2, GOOD, b"keepwarm-timeout-ms: soon"),
        post("/v2/models/nothere/infer", GOOD),
        post(V2, b"x" * (LEAN_BODY_BYTES + 1)),
        post(TF, b'{"instances": [[1, 2]]}'),
    ],
    ids=["bad-json", "wrong-shape", "empty", "bad-timeout", "unknown-model", "large", "tf-shape"],
)
def test_errors_on_the_lean_path_are_the_handler_paths(app: HttpApp, request_bytes: bytes) -> None:
    path = request_bytes.split(b" ")[1].decode()
    resolve = post(path, GOOD if path.startswith("/v2") else b'{"instances": [[1, 2, 3, 4]]}')
    lean, plain, count = both(app, [resolve, request_bytes, request_bytes])
    assert lean == plain
    assert not lean[1].startswith(b"HTTP/1.1 200")
    large = len(request_bytes) > LEAN_BODY_BYTES
    assert count == (0 if large else 2)


def test_pipelined_requests_are_answered_in_order(app: HttpApp) -> None:
    """Three requests in one write behind a lean one: answered in the order sent."""
    bodies = [
        orjson.dumps({"id": str(n), "inputs": [{"name": "x", "datatype": "FP32",
                                                "shape": [n, 4], "data": [0] * 4 * n}]})
        for n in (1, 2, 3, 4)
    ]  # fmt: skip
    got: list[bytes] = []

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post(V2, GOOD))
        got.append(await read_response(reader))  # the path resolved
        writer.write(b"".join(post(V2, body) for body in bodies))
        for _ in bodies:
            got.append(await read_response(reader))
        writer.close()

    count = served(app, talk, lean=True)
    ids = [orjson.loads(answer.partition(b"\r\n\r\n")[2])["id"] for answer in got[1:]]
    assert ids == ["1", "2", "3", "4"]
    assert count >= 1


def test_a_body_sent_byte_by_byte_takes_the_lean_path(app: HttpApp) -> None:
    got: list[bytes] = []

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post(V2, GOOD))
        got.append(await read_response(reader))
        for byte in post(V2, GOOD):
            writer.write(bytes((byte,)))
            await writer.drain()
        got.append(await read_response(reader))
        writer.close()

    assert served(app, talk, lean=True) == 1
    assert got[0] == got[1]


def test_a_client_gone_mid_body_leaves_the_server_serving(app: HttpApp) -> None:
    got: list[bytes] = []

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post(V2, GOOD))
        got.append(await read_response(reader))
        writer.write(post(V2, GOOD)[:-10])  # the body not all sent
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post(V2, GOOD))
        got.append(await read_response(reader))
        writer.close()

    assert served(app, talk, lean=True) == 2
    assert got[0] == got[1]


def test_a_short_body_is_refused_when_its_time_is_up(app: HttpApp) -> None:
    """Content-Length says more than comes: 408 after the body limit, as uvicorn's
    cycle would be; then the connection closes."""
    got: list[bytes] = []

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post(V2, GOOD))
        got.append(await read_response(reader))
        writer.write(post(V2, GOOD)[:-10])
        got.append(await asyncio.wait_for(reader.read(), 5))  # answered, then closed
        writer.close()

    limits = Limits(body=0.2)
    assert served(app, talk, lean=True, limits=limits) == 1
    assert got[1].startswith(b"HTTP/1.1 408 ")


def test_a_lean_connection_is_closed_when_idle_for_its_keep_alive_time(app: HttpApp) -> None:
    got: list[bytes] = []

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(2):
            writer.write(post(V2, GOOD))
            got.append(await read_response(reader))
        got.append(await asyncio.wait_for(reader.read(), 5))  # closed by the server
        writer.close()

    assert served(app, talk, lean=True, limits=Limits(keep_alive=0.2)) == 1
    assert got[2] == b""


def test_a_waiting_lean_request_hears_its_client_go() -> None:
    """``receive`` (a queued request's watch on its client) returns ``http.disconnect``
    once the connection is lost (uvicorn sets ``disconnected`` and the event)."""

    async def scenario() -> dict[str, Any]:
        async def handler(request: Any) -> Any:
            raise AssertionError("not called")

        cycle = LeanCycle(handler, {}, [], 0.0)
        waiting = asyncio.ensure_future(cycle.receive())
        await asyncio.sleep(0)
        assert not waiting.done()
        cycle.disconnected = True
        cycle.message_event.set()
        return await asyncio.wait_for(waiting, 5)

    assert asyncio.run(scenario()) == {"type": "http.disconnect"}


def test_a_shutdown_while_a_lean_request_runs_lets_it_finish_then_closes(
    app: HttpApp,
) -> None:
    """uvicorn's graceful shutdown reaching a connection whose lean request runs: the
    request is answered, with ``connection: close``, and the connection closes."""
    made: list[OneWriteProtocol] = []
    got: list[bytes] = []

    class ShutDown(OneWriteProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, early=app.early_answer, lean=app, **kwargs)
            made.append(self)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            if self.lean_requests:
                self.shutdown()  # as uvicorn's server does to every connection

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(2):
            writer.write(post(V2, GOOD))
            got.append(await read_response(reader))
        got.append(await asyncio.wait_for(reader.read(), 5))
        writer.close()

    run(app, talk, base=ShutDown)
    assert sum(p.lean_requests for p in made) == 1
    assert b"connection: close" not in got[0]
    assert got[1].startswith(b"HTTP/1.1 200 OK\r\n") and b"connection: close\r\n" in got[1]
    assert got[1].partition(b"\r\n\r\n")[2] == got[0].partition(b"\r\n\r\n")[2]
    assert got[2] == b""
