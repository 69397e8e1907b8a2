"""``bench/overload_probe.py``: the probe's request, its timing of an answer's first
bytes against a real socket server (a 503 read at its head while the body is still
being sent, a 200 read to its end), and its figures."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from overload_probe import one, probe_figures, request_bytes, status_of

BODY = b"[" + b"1," * 1_000_000 + b"1]"  # 2 MB: more than the kernel takes at once


@pytest.fixture
def refusing() -> Iterator[tuple[str, int]]:
    """A server that answers 503 on a request's headers and never reads its body."""
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()
    failed: list[BaseException] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                done.wait(30)  # the body unread until the client is done
        except BaseException as exc:  # reported by the test
            failed.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    yield listener.getsockname()
    done.set()
    thread.join(30)
    listener.close()
    assert not failed, failed


def test_the_request_names_the_path_and_the_length() -> None:
    host, port, head = request_bytes("http://127.0.0.1:8123/v2/models/m/infer", b"abc")
    assert (host, port) == ("127.0.0.1", 8123)
    assert head.startswith(b"POST /v2/models/m/infer HTTP/1.1\r\n")
    assert b"Content-Length: 3\r\n" in head and head.endswith(b"\r\n\r\n")


def test_a_503_is_timed_at_its_head_its_body_unread(refusing: tuple[str, int]) -> None:
    host, port = refusing
    _, _, head = request_bytes(f"http://{host}:{port}/x", BODY)
    detail: list[tuple[int, int, float, float, float]] = []
    status, began, seconds = one(host, port, head, BODY, detail)
    assert status == 503
    assert began > 0 and 0 < seconds < 5
    # its port, status and times, for bench/overload_segments.py to join to the server's
    [(local, code, connecting, written, read)] = detail
    assert local > 0 and code == 503
    assert connecting <= written == began < read
    assert read - began == pytest.approx(seconds)


def test_a_200_is_read_to_its_end() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    host, port = listener.getsockname()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            data = b""
            while len(data) < len(head) + 3:
                data += conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
            conn.sendall(b"ok")

    _, _, head = request_bytes(f"http://{host}:{port}/x", b"abc")
    thread = threading.Thread(target=serve)
    thread.start()
    try:
        status, _, seconds = one(host, port, head, b"abc")
    finally:
        thread.join(30)
        listener.close()
    assert status == 200 and seconds > 0


def test_status_of_an_answer_head() -> None:
    assert status_of(b"HTTP/1.1 503 Service Unavailable\r\n") == 503
    assert status_of(b"HTTP/1.1 2") == 0  # cut short
    assert status_of(b"") == 0


def test_the_figures_are_the_503s_alone() -> None:
    results = [[503, 0.0, 0.001 * i] for i in range(1, 101)] + [[200, 0.0, 9.0], [0, 0.0, 0.0]]
    found = probe_figures({"results": results})
    assert found["probe_refused"] == 100 and found["probe_other"] == 1
    assert found["probe_p50_refused_ms"] == pytest.approx(51.0)
    assert found["probe_p99_refused_ms"] == pytest.approx(100.0)
    assert probe_figures({"results": []})["probe_p99_refused_ms"] != 0  # nan: no 503s
