"""``GET /metrics`` reads each process's memory (smaps: tens of ms on a large process) on
a thread: the event loop answers other requests meanwhile (issue 9: refusals under
load waited behind a scrape)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from keepwarm import process_memory as pm
from keepwarm.http import HttpApp
from keepwarm.http.messages import Message

GATE_TIMEOUT_S = 5.0


async def call(app: HttpApp, path: str) -> tuple[int, bytes]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    raw = path.encode()
    scope: dict[str, Any] = {
        "type": "http", "method": "GET", "path": path, "raw_path": raw, "query_string": b"",
        "headers": [],
    }  # fmt: skip
    await app(scope, receive, send)
    return sent[0]["status"], sent[1]["body"]


def test_a_slow_memory_read_does_not_hold_the_loop(app: HttpApp) -> None:
    gate = threading.Event()
    read_on: list[int] = []

    def slow_source() -> list[pm.ProcessMemory]:
        read_on.append(threading.get_ident())
        gate.wait(GATE_TIMEOUT_S)  # a slow smaps read: held until the loop has answered
        return [pm.ProcessMemory("7", 4242, 3 * 1024, 0)]

    async def scenario() -> tuple[bool, int, tuple[int, bytes]]:
        scrape = asyncio.create_task(call(app, "/metrics"))
        while not read_on:  # the scrape has begun reading memory
            await asyncio.sleep(0.001)
        status, _ = await asyncio.wait_for(call(app, "/v2/health/live"), GATE_TIMEOUT_S)
        pending = not scrape.done()
        gate.set()
        return pending, status, await scrape

    unregister = pm.register(slow_source)
    try:
        loop_thread = threading.get_ident()
        pending, live, (status, body) = asyncio.run(scenario())
    finally:
        gate.set()
        unregister()
    assert read_on and read_on[0] != loop_thread
    assert (pending, live, status) == (True, 200, 200)
    assert b'keepwarm_process_pss_bytes{process="7"} 3072.0' in body
