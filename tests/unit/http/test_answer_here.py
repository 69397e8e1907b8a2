"""A lean request's answer written by the thread that encodes it (``http/answer_here.py``),
on a real uvicorn server on uvloop (in a thread of its own) with plain-socket clients: the
answers are byte for byte those the loop writes; an answer reaches its client while the
event loop is held; what the socket does not take the loop writes after it; a client
gone, a pipelined pair and a shutdown during a request end as on the loop."""

from __future__ import annotations

import asyncio
import functools
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn
import uvloop

from keepwarm.http import HttpApp
from keepwarm.http.lean import LeanCycle
from keepwarm.http.protocol import OneWriteProtocol
from keepwarm.repository import Repository
from keepwarm.service import InferenceService
from support.gated_model import GATED, Gate
from support.one_write import post
from support.repo_builders import place, place_python, write_model_toml

V2 = "/v2/models/echo/infer"
TF = "/v1/models/echo:predict"
GATED_V2 = "/v2/models/gated/infer"
WAIT_S = 10.0


def rows(n: int, first: float = 1.0) -> bytes:
    data = [first] + [0.5] * (4 * n - 1)
    return orjson.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [n, 4], "data": data}]}
    )


@pytest.fixture
def app(tmp_path: Path) -> Iterator[HttpApp]:
    place_python(tmp_path / "echo", 1, "EchoVersion")
    write_model_toml(tmp_path / "echo", "")
    place(tmp_path / "gated", 1, files=GATED)
    Gate.reset()
    Gate.open.set()  # for its warm-up
    with Repository(tmp_path, allow_unsafe=True, poll_seconds=60) as repository:
        repository.wait_ready("echo", timeout=30)
        repository.wait_ready("gated", timeout=30)
        Gate.reset()
        service = InferenceService(repository)
        service.started()
        try:
            yield HttpApp(service, max_body_bytes=1 << 24, max_json_depth=8)
        finally:
            Gate.open.set()
            service.close()


class Live:
    """``app`` served in a thread; ``here``: answers written off the loop where they can
    be; ``sndbuf``: the accepted sockets' send buffer, if set."""

    def __init__(self, app: HttpApp, *, here: bool = True, sndbuf: int = 0) -> None:
        self.protocols: list[OneWriteProtocol] = []
        self.cycles: list[LeanCycle] = []
        self.answered: list[tuple[int, int]] = []  # per lean answer: bytes sent off, left
        self.answered_one = threading.Semaphore(0)  # released per lean answer
        self.loop: asyncio.AbstractEventLoop | None = None
        live = self

        class Tracked(OneWriteProtocol):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, lean=app, early=app.early_answer, **kwargs)
                if not here:
                    self._writer_made = True  # no writer: every answer from the loop
                live.protocols.append(self)

            def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
                if sndbuf:
                    sock = transport.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
                super().connection_made(transport)

            def _start_lean(self, cycle: LeanCycle) -> None:
                live.cycles.append(cycle)
                super()._start_lean(cycle)

            def lean_answered(self, cycle: LeanCycle, data: bytes) -> None:
                sent = 0 if cycle.here is None else cycle.here.sent
                live.answered.append((sent, len(data)))
                live.answered_one.release()
                super().lean_answered(cycle, data)

        self._protocol = Tracked
        self._app = app
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self.port = 0
        self._thread = threading.Thread(target=uvloop.run, args=(self._serve(),))

    async def _serve(self) -> None:
        config = uvicorn.Config(
            self._app,
            port=0,
            loop="none",
            http=functools.partial(self._protocol),  # type: ignore[arg-type]
            lifespan="off",
            log_level="critical",
            server_header=False,
            date_header=False,
        )
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup()
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.port = server.servers[0].sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.should_exit = True
        await server.shutdown()

    def __enter__(self) -> Live:
        self._thread.start()
        assert self._ready.wait(WAIT_S)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.loop is not None and self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(WAIT_S)
        assert not self._thread.is_alive()

    def connect(self, rcvbuf: int = 0) -> socket.socket:
        sock = socket.socket()
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(WAIT_S)
        sock.connect(("127.0.0.1", self.port))
        return sock

    @contextmanager
    def loop_held(self, then: Callable[[], None] = lambda: None) -> Iterator[None]:
        """The event loop held in a callback until the block ends; ``then()`` runs in it
        before it returns."""
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            held.set()
            release.wait(WAIT_S)
            then()

        assert self.loop is not None
        self.loop.call_soon_threadsafe(hold)
        assert held.wait(WAIT_S)
        try:
            yield
        finally:
            release.set()


def read_answer(sock: socket.socket, left: bytearray | None = None) -> bytes:
    """One answer; ``left``: bytes read before it, and after it on return (the next
    pipelined answer's), else more bytes than one answer fail."""
    data = bytes(left or b"")
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    if left is not None:
        left[:] = body[length:]
    assert len(body) == length or left is not None, "more bytes than one answer"
    return head + b"\r\n\r\n" + body[:length]


def at_eof(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def held_second(sock: socket.socket, first: float = 1.0) -> bytes:
    """The gated model's path resolved by a request (its answer returned), then another
    sent (``first``: its first value), held at the gate."""
    sock.sendall(post(GATED_V2, rows(1)))
    Gate.open.set()
    answer = read_answer(sock)
    Gate.reset()
    sock.sendall(post(GATED_V2, rows(1, first)))
    assert Gate.running.acquire(timeout=WAIT_S)
    return answer


def talk(live: Live, requests: list[bytes], *, together: bool = False) -> list[bytes]:
    with live.connect() as sock:
        if together:
            sock.sendall(b"".join(requests))
            left = bytearray()
            answers = [read_answer(sock, left) for _ in requests]
            assert not left
            return answers
        answers = []
        for request in requests:
            sock.sendall(request)
            answers.append(read_answer(sock))
        return answers


def test_answers_written_off_the_loop_are_the_loops_byte_for_byte(app: HttpApp) -> None:
    requests = [post(V2, rows(1)), post(V2, rows(2)), post(TF, b'{"instances": [[1, 2, 3, 4]]}')]
    requests += [post(TF, b'{"instances": [[5, 6, 7, 8]]}'), post(V2, rows(3))]
    requests += [post(V2, b'{"inputs": []}'), post(V2, rows(1))]  # an error on the loop
    with Live(app, here=False) as live:
        before = talk(live, requests)
        assert {sent for sent, _ in live.answered} == {0}
    with Live(app) as live:
        now = talk(live, requests)
        for _ in requests:  # each ended by the loop (after its client had it)
            assert live.answered_one.acquire(timeout=WAIT_S)
        answered = live.answered
    assert now == before
    assert now[0].startswith(b"HTTP/1.1 200 OK\r\n") and now[5].startswith(b"HTTP/1.1 400")
    # all lean (the paths resolved by the first server): each success sent whole by the
    # worker, the error written by the loop
    expected = [(True, 0)] * 5 + [(False, len(now[5]))] + [(True, 0)]
    assert [(sent > 0, left) for sent, left in answered] == expected


def test_an_answer_reaches_its_client_while_the_loop_is_held(app: HttpApp) -> None:
    """The worker's write needs no turn of the loop; a shutdown begun after it closes
    the connection once the loop has the request back, after the whole answer."""
    with Live(app) as live, live.connect() as sock:
        first = held_second(sock, 2.0)
        protocol = live.protocols[0]
        with live.loop_held(then=protocol.shutdown):
            Gate.open.set()
            answer = read_answer(sock)
        assert at_eof(sock)
    assert answer.replace(b"2.0", b"1.0") == first
    assert b"connection: close" not in answer.lower()
    assert live.answered[-1][1] == 0


def test_a_shutdown_before_the_answer_closes_the_connection(app: HttpApp) -> None:
    with Live(app) as live, live.connect() as sock:
        held_second(sock)
        protocol = live.protocols[0]
        done = threading.Event()

        def shut() -> None:
            protocol.shutdown()
            done.set()

        assert live.loop is not None
        live.loop.call_soon_threadsafe(shut)
        assert done.wait(WAIT_S)
        Gate.open.set()
        answer = read_answer(sock)
        assert at_eof(sock)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nconnection: close\r\n" in answer
    assert live.answered[-1][0] == 0  # the loop wrote it, with ``connection: close``


def test_a_client_gone_before_its_answer_is_counted_once(app: HttpApp) -> None:
    service = app.service
    with Live(app) as live:
        with live.connect() as sock:
            held_second(sock)
            cycle = live.cycles[-1]
            with live.loop_held():
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                sock.close()  # reset: the worker's write fails
                Gate.open.set()
                for _ in range(500):
                    if cycle.response_started:
                        break
                    threading.Event().wait(0.01)
                assert cycle.response_started
        answers = talk(live, [post(GATED_V2, rows(1))])  # still serving
        assert answers[0].startswith(b"HTTP/1.1 200 OK\r\n")
    stats = service.statistics("gated", None)[0]["inference_stats"]
    assert stats["success"]["count"] + stats["fail"]["count"] == 3


def test_a_pipelined_pair_behind_a_lean_request_is_answered_in_order(app: HttpApp) -> None:
    Gate.open.set()
    requests = [post(GATED_V2, rows(1)), post(GATED_V2, rows(1, 3.0))]
    requests.append(post(GATED_V2, rows(2, 4.0)))
    with Live(app, here=False) as live:
        before = talk(live, requests[:1]) + talk(live, requests[1:], together=True)
    with Live(app) as live:
        now = talk(live, requests[:1]) + talk(live, requests[1:], together=True)
        lean = sum(p.lean_requests for p in live.protocols)
    assert now == before
    assert b"[3.0,0.5" in now[1] and b"[4.0,0.5" in now[2]
    assert lean == 3  # the paths resolved by the first server; the second of the pair
    # queued behind the first on the lean path too


def test_an_answer_the_socket_cannot_take_is_finished_by_the_loop(app: HttpApp) -> None:
    Gate.open.set()
    big = post(GATED_V2, rows(2000))  # about 45 KB of answer
    with Live(app, here=False) as live:
        before = talk(live, [post(GATED_V2, rows(1)), big])
    with Live(app, sndbuf=4096) as live, live.connect(rcvbuf=4096) as sock:
        sock.sendall(post(GATED_V2, rows(1)))
        read_answer(sock)
        assert live.answered_one.acquire(timeout=WAIT_S)  # that request ended
        sock.sendall(big)
        assert live.answered_one.acquire(timeout=WAIT_S)  # the worker's write over, none read
        now = read_answer(sock)
        sent, left = live.answered[-1]
    assert now == before[1]
    assert sent > 0 and left > 0 and sent + left == len(now)
