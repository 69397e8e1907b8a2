"""``OneWriteProtocol``'s keep-alive timer (one per connection): a connection idle for
``timeout_keep_alive`` after a response is closed; one that keeps sending requests, or
whose request runs longer than that, is not."""

from __future__ import annotations

import asyncio
import time

from keepwarm.http.messages import Receive, Scope, Send
from support.one_write import post, read_response, run

KEEP_ALIVE = 0.3


async def answer(scope: Scope, receive: Receive, send: Send) -> None:
    """``/slow`` answers after ``3 * KEEP_ALIVE``; anything else at once."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/slow":
        await asyncio.sleep(3 * KEEP_ALIVE)
    headers = [(b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout() -> None:
    idle: list[float] = []

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/", b""))
        assert (await read_response(reader)).endswith(b"ok")
        answered = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        idle.append(time.monotonic() - answered)
        writer.close()

    run(answer, talk, KEEP_ALIVE)
    assert KEEP_ALIVE * 0.9 <= idle[0] < KEEP_ALIVE + 1.0


def test_a_connection_that_keeps_sending_requests_stays_open() -> None:
    answers: list[bytes] = []

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(6):  # 6 x KEEP_ALIVE / 2: past the timeout in all, never idle that long
            writer.write(post("/", b""))
            answers.append(await read_response(reader))
            await asyncio.sleep(KEEP_ALIVE / 2)
        writer.close()

    run(answer, talk, KEEP_ALIVE)
    assert len(answers) == 6 and all(a.endswith(b"ok") for a in answers)


def test_a_request_running_past_the_timeout_is_answered_then_idles_again() -> None:
    got: list[bytes] = []

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/", b""))
        got.append(await read_response(reader))  # the timer is set from here
        writer.write(post("/slow", b""))  # busy through the timer's firing
        got.append(await read_response(reader))
        answered = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        got.append(b"%f" % (time.monotonic() - answered))
        writer.close()

    run(answer, talk, KEEP_ALIVE)
    assert got[0].endswith(b"ok") and got[1].endswith(b"ok")
    assert KEEP_ALIVE * 0.9 <= float(got[2]) < KEEP_ALIVE + 1.0
