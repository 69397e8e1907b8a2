"""A load client that alternates two or more sides (a model name on one server, or another
server) finely enough that the machine's speed is the same for all of them.

Why: on this shared 2-core machine a server's speed moves by 10-30% from one second to the
next (other work, its caches). ``wrk`` runs on one side then the other, whole seconds each,
so each per-round ratio holds that drift: two names of ONE server, both batching off, came
out 0.79-1.35x per 1 s round (16 rounds, sd 0.15, median 0.95), as much as two servers did
(0.80-1.18x, sd 0.11). The scatter is in time, not between server processes; what removes
it is alternating faster than the machine drifts:

- ``phase_ms = 0`` (one connection only): the sides take turns request by request, so each
  request of one side has a request of the other a few hundred µs away;
- ``phase_ms > 0``: every connection sends to one side during a phase, then all move to
  the next side; a request in flight at a switch ends on the side it was sent to. Phases
  must last well beyond one answer's latency: the switch's overlap then touches a small
  share of each phase, alike for every side.

The turns follow ``pair_order``: each side comes after each side equally often, so that
what a request leaves behind is charged to every side alike. Each connection holds one
keep-alive HTTP/1.1 socket per server (blocking at c=1; at c>1 non-blocking under one
``selectors`` loop; one thread, no HTTP library); a request is timed from just before its
first byte is written to its answer's last byte read, and only 2xx answers count. A
side's req/s is its answers over its own time: its phases' wall time, or with
``phase_ms = 0`` the sum of its requests' times (the client's few µs between requests
included, as ``wrk``'s figure has them).

    python bench/paired_load.py SPEC.json   # prints one JSON object: side -> figures

``SPEC``: ``{"sides": {name: {"url": ..., "bodies": [path, ...]}}, "c": int,
"seconds": float, "phase_ms": float}``.
"""

from __future__ import annotations

import json
import math
import selectors
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HEAD_END = b"\r\n\r\n"


def request_bytes(url: str, body: bytes) -> tuple[tuple[str, int], bytes]:
    """The server address and the whole keep-alive POST of ``body`` to ``url``."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return (host, port), head + body


def parse_head(data: bytes) -> tuple[int, int, int] | None:
    """``(status, header bytes, body length)`` of an answer's start, ``None`` until its head
    is whole. An answer without ``Content-Length`` (this client sends nothing that would
    get one) is an error, as is a malformed status line."""
    end = data.find(HEAD_END)
    if end < 0:
        return None
    lines = data[:end].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(parts[1]), end + len(HEAD_END), int(value.strip())
    raise ValueError("answer without Content-Length")


def pair_order(sides: int) -> list[int]:
    """A cycle of ``sides`` squared turns in which every side follows every side (itself
    included) exactly once: whatever one side's request leaves behind (a thread still
    going to sleep, cache lines) falls on each side alike, where in plain round robin each
    side always follows the same one and would be charged with its after-costs. (A de
    Bruijn sequence of order 2: each side, then each pair of it and a later side.)"""
    order = []
    for first in range(sides):
        order.append(first)
        for later in range(first + 1, sides):
            order += [first, later]
    return order


def side_for(index: int, sides: int) -> int:
    """The side of phase (or, request by request, request) ``index``."""
    order = pair_order(sides)
    return order[index % len(order)]


def phase_seconds(elapsed: float, phase: float, sides: int) -> list[float]:
    """Per side, the seconds of ``elapsed`` spent in its phases (the last one cut short)."""
    spent = [0.0] * sides
    whole = int(elapsed // phase)
    for index in range(whole):
        spent[side_for(index, sides)] += phase
    spent[side_for(whole, sides)] += elapsed - whole * phase
    return spent


def figures(latencies: list[float], seconds: float, failed: int) -> dict[str, float]:
    """req/s (answers over ``seconds``), p50 and p99 in ms (nearest rank; NaN without any
    answer) and the failed count of one side."""
    ordered = sorted(latencies)

    def rank(q: float) -> float:
        if not ordered:
            return math.nan
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] * 1e3

    return {"rps": len(ordered) / seconds if seconds > 0 else math.nan, "p50_ms": rank(0.5),
            "p99_ms": rank(0.99), "requests": len(ordered), "failed": failed}  # fmt: skip


@dataclass
class Slot:
    """One client connection: its sockets (one per server), the request in flight."""

    sockets: dict[tuple[str, int], socket.socket] = field(default_factory=dict)
    sock: socket.socket | None = None  # the one the request in flight went out on
    side: int = 0
    began: float = 0.0
    out: memoryview = field(default_factory=lambda: memoryview(b""))
    answer: bytearray = field(default_factory=bytearray)


class Load:
    """The sides' prepared requests, and per side the answers' latencies, failures and
    time spent, filled by ``alternate`` (one connection) or ``phases`` (any number)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.names = list(spec["sides"])
        self.c, self.seconds = int(spec["c"]), float(spec["seconds"])
        self.phase = float(spec["phase_ms"]) / 1e3
        if self.c < 1 or self.seconds <= 0 or self.phase < 0 or not self.names:
            raise ValueError(f"bad spec: c={self.c}, seconds={self.seconds}, "
                             f"phase_ms={spec['phase_ms']}")  # fmt: skip
        if self.phase == 0 and self.c != 1:
            raise ValueError("request-by-request alternation needs one connection (c = 1)")
        self.requests = [
            [request_bytes(spec["sides"][n]["url"], Path(p).read_bytes())
             for p in spec["sides"][n]["bodies"]] for n in self.names
        ]  # fmt: skip
        self.latencies: list[list[float]] = [[] for _ in self.names]
        self.spent = [0.0] * len(self.names)
        self.failed = [0] * len(self.names)
        self.sent = [0] * len(self.names)
        self.order = pair_order(len(self.names))

    def next_request(self, index: int) -> tuple[int, tuple[str, int], bytes]:
        """The side of phase or request ``index``, and that side's next request."""
        side = self.order[index % len(self.order)]
        address, data = self.requests[side][self.sent[side] % len(self.requests[side])]
        self.sent[side] += 1
        return side, address, data

    def addresses(self) -> list[tuple[str, int]]:
        """Every server the sides name, once each."""
        return list(dict.fromkeys(address for side in self.requests for address, _ in side))

    def answered(self, side: int, status: int, latency: float) -> None:
        if 200 <= status < 300:
            self.latencies[side].append(latency)
        else:
            self.failed[side] += 1

    def results(self) -> dict[str, dict[str, float]]:
        return {n: figures(self.latencies[i], self.spent[i], self.failed[i])
                for i, n in enumerate(self.names)}  # fmt: skip


def connect(address: tuple[str, int]) -> socket.socket:
    """A connected socket, Nagle off, in blocking mode (no ``poll`` before each call)."""
    sock = socket.create_connection(address, timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(None)
    return sock


def read_answer(sock: socket.socket) -> int:
    """Block until one whole answer is read from ``sock``; its status."""
    answer = b""
    while True:
        piece = sock.recv(1 << 20)
        if not piece:
            raise ConnectionError("the server closed a keep-alive connection")
        answer += piece
        head = parse_head(answer)
        if head is not None and len(answer) >= head[1] + head[2]:
            return head[0]


def alternate(load: Load) -> None:
    """One connection per server, blocking sockets; the sides take turns request by
    request. A side's time is, per request, from its send to the next send."""
    sockets = {address: connect(address) for address in load.addresses()}  # before the clock
    clock = time.perf_counter
    deadline = clock() + load.seconds
    index = 0
    try:
        began = clock()
        while began < deadline:
            side, address, data = load.next_request(index)
            sock = sockets[address]
            sock.sendall(data)
            status = read_answer(sock)
            done = clock()
            load.answered(side, status, done - began)
            load.spent[side] += done - began
            index += 1
            began = done
    finally:
        for sock in sockets.values():
            sock.close()


def phases(load: Load) -> None:
    """``c`` connections, all on one side per phase (round robin), non-blocking sockets
    under one selector; a request in flight at a switch ends on the side it was sent to."""
    selector = selectors.DefaultSelector()
    slots = [Slot() for _ in range(load.c)]

    def open_socket(slot: Slot, address: tuple[str, int]) -> socket.socket:
        sock = slot.sockets[address] = connect(address)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, slot)
        return sock

    for slot in slots:  # every connection open before the clock starts
        for address in load.addresses():
            open_socket(slot, address)
    clock = time.perf_counter
    started = clock()
    deadline = started + load.seconds

    def send(slot: Slot) -> None:
        now = clock()
        side, address, data = load.next_request(int((now - started) // load.phase))
        sock = slot.sockets.get(address) or open_socket(slot, address)
        slot.sock, slot.side, slot.began, slot.answer = sock, side, now, bytearray()
        slot.out = memoryview(data)[sock.send(data) :]
        if slot.out:
            selector.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, slot)

    try:
        for slot in slots:
            send(slot)
        while clock() < deadline:
            for key, mask in selector.select(timeout=1.0):
                slot, sock = key.data, key.fileobj
                assert isinstance(slot, Slot) and isinstance(sock, socket.socket)
                if mask & selectors.EVENT_WRITE and slot.out:
                    slot.out = slot.out[sock.send(slot.out) :]
                    if not slot.out:
                        selector.modify(sock, selectors.EVENT_READ, slot)
                if mask & selectors.EVENT_READ and sock is not slot.sock:
                    if not sock.recv(1 << 20):  # an idle one closed (keep-alive timeout)
                        selector.unregister(sock)
                        sock.close()
                        slot.sockets = {a: s for a, s in slot.sockets.items() if s is not sock}
                elif mask & selectors.EVENT_READ:
                    piece = sock.recv(1 << 20)
                    if not piece:
                        raise ConnectionError("the server closed a keep-alive connection")
                    slot.answer += piece
                    head = parse_head(bytes(slot.answer[:65536]))
                    if head is None or len(slot.answer) < head[1] + head[2]:
                        continue
                    done = clock()
                    load.answered(slot.side, head[0], done - slot.began)
                    if done < deadline:
                        send(slot)
        load.spent = phase_seconds(clock() - started, load.phase, len(load.names))
    finally:
        selector.close()
        for slot in slots:
            for sock in slot.sockets.values():
                sock.close()


def run(spec: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Load the sides as ``spec`` says; per side its figures (``figures``)."""
    load = Load(spec)
    (alternate if load.phase == 0 else phases)(load)
    return load.results()


if __name__ == "__main__":
    print(json.dumps(run(json.loads(Path(sys.argv[1]).read_text()))))
