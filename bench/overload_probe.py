"""A light second client beside the overload cell's load (``bench/overload.py``): a few
threads in a process of their own, each sending one request at a time on a fresh
connection with plain sockets, at a low steady rate, and timing each answer's first
byte from the instant its first byte went to the kernel.

The load generator's 503 figures hold its own lateness: one asyncio loop in Python
driving 64 clients and writing their 1 MB bodies, its wake-ups late by 3-40 ms at p99
when the two cores are full, and its connection pool's waits. Here a thread blocked in
``select`` wakes when the answer arrives and does nothing else; the process asks for a
higher priority (nice -10, when it may) so that its own wake-up is not the figure. The
server cannot tell its requests from the load's: the refusals it times are the server's,
from the wire to the wire, with one thread's wake-up added.

    python bench/overload_probe.py URL BODY SECONDS RATE [THREADS]

prints one JSON object: ``results``, a list of ``[status, began, head_seconds]`` (the
status 0 when the connection failed).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

#: How much of the body each write offers the kernel.
CHUNK = 256 * 1024


def request_bytes(url: str, body: bytes) -> tuple[str, int, bytes]:
    """The host, port and header block of a POST of ``body`` to ``url``."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return host, port, head


def status_of(head: bytes) -> int:
    """The status code of an answer's first bytes (0 when they hold none)."""
    parts = head.split(b" ", 2)
    whole = len(parts) > 2 and len(parts[1]) == 3 and parts[1].isdigit()
    return int(parts[1]) if whole else 0


#: One probe request's connection port, status, and its connect's start, first byte
#: written and answer's first byte read (``time.perf_counter``).
Detail = tuple[int, int, float, float, float]


def one(
    host: str, port: int, head: bytes, body: bytes, detail: list[Detail] | None = None
) -> tuple[int, float, float]:
    """Send one request on a new connection; return its status, when its first byte was
    written and the seconds until the answer's first bytes were read. A 503 is left at
    its head (the connection closed); any other answer is read to its end. ``detail``
    gets its ``Detail`` (``bench/overload_segments.py`` joins it to the server's times)."""
    connecting = time.perf_counter()
    sock = socket.create_connection((host, port), timeout=30)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        data = memoryview(head + body)
        began = time.perf_counter()
        sent = sock.send(data)
        answer = b""
        head_at = 0.0
        while True:
            writing = [sock] if sent < len(data) else []
            readable, writable, _ = select.select([sock], writing, [], 30)
            if not readable and not writable:
                raise TimeoutError("no answer in 30 s")
            if writable:
                sent += sock.send(data[sent : sent + CHUNK])
            if readable:
                piece = sock.recv(65536)
                if not head_at:
                    head_at = time.perf_counter()
                answer += piece
                if not piece or (status_of(answer) == 503 and b"\r\n" in answer):
                    break
        status = status_of(answer)
        if detail is not None:
            detail.append((sock.getsockname()[1], status, connecting, began, head_at))
        return status, began, head_at - began
    finally:
        sock.close()


def thread_waits() -> dict[str, float]:
    """This process's threads' mean wait for a core per time put on one (microseconds,
    from the kernel's schedstat) and their p-largest: what of a probe's figure is the
    probe waiting for a core."""
    waits = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            _, wait, runs = (task / "schedstat").read_text().split()[:3]
        except (OSError, ValueError):
            continue
        if int(runs):
            waits.append(int(wait) / int(runs) / 1000)
    waits.sort()
    return {"mean_us": sum(waits) / len(waits) if waits else 0.0, "max_us": max(waits, default=0.0)}


def probe_figures(found: dict[str, list[list[float]]]) -> dict[str, float]:
    """The probe's 503s (p50 and p99 ms of their first byte), how many, and its other
    answers that were neither 200 nor 503 (failed connections included)."""
    refused = sorted(seconds for status, _, seconds in found["results"] if status == 503)
    other = sum(1 for status, _, _ in found["results"] if status not in (200, 503))

    def pct(q: float) -> float:
        if not refused:
            return float("nan")
        return refused[min(len(refused) - 1, int(q * len(refused)))] * 1000

    return {
        "probe_p50_refused_ms": pct(0.5),
        "probe_p99_refused_ms": pct(0.99),
        "probe_refused": float(len(refused)),
        "probe_other": float(other),
    }


def main() -> int:
    url, body_path, seconds, rate = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    threads = int(sys.argv[5]) if len(sys.argv) > 5 else 16
    with contextlib.suppress(OSError):
        os.nice(-10)  # a root user's probe wakes ahead of the load (else as it is)
    body = Path(body_path).read_bytes()
    host, port, head = request_bytes(url, body)
    out: list[tuple[int, float, float]] = []
    detail: list[Detail] = []
    start = time.perf_counter()
    interval = threads / rate

    def run(index: int) -> None:
        due = start + index * interval / threads
        while due < start + seconds:
            time.sleep(max(0.0, due - time.perf_counter()))
            try:
                out.append(one(host, port, head, body, detail))
            except OSError:
                out.append((0, time.perf_counter(), 0.0))
            due += interval

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print(json.dumps({"results": out, "detail": detail, "waits": thread_waits()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
