"""``bench/paired_load.py``: the client that alternates sides within milliseconds. Its
request and answer parsing (hostile answers refused), the turn order (each side after
each side once), the phases' time split, the figures, the spec's checks, and whole runs
against a real keep-alive HTTP server whose paths answer at known speeds."""

from __future__ import annotations

import math
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.paced_server import paced_server

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from paired_load import Load, figures, pair_order, parse_head, phase_seconds, request_bytes, run


def test_request_bytes_is_a_whole_keep_alive_post() -> None:
    address, data = request_bytes("http://127.0.0.1:8123/v2/models/m/infer", b'{"a": 1}')
    assert address == ("127.0.0.1", 8123)
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"POST /v2/models/m/infer HTTP/1.1\r\n")
    assert b"Content-Length: 8" in head and b"close" not in head
    assert body == b'{"a": 1}'
    assert request_bytes("http://localhost/x", b"")[0] == ("localhost", 80)


def test_parse_head_waits_for_the_whole_head_and_reads_its_length() -> None:
    answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nCONTENT-LENGTH: 5\r\n\r\nhello"
    assert parse_head(answer[:20]) is None
    assert parse_head(b"") is None
    status, head, length = parse_head(answer) or (0, 0, 0)
    assert (status, length) == (200, 5)
    assert answer[head:] == b"hello"
    refused = b"HTTP/1.0 503 Busy\r\nContent-Length: 0\r\n\r\n"
    assert parse_head(refused) == (503, len(refused), 0)


@pytest.mark.parametrize(
    "answer",
    [b"garbage\r\n\r\n", b"HTTP/1.1 abc OK\r\nContent-Length: 1\r\n\r\n",
     b"SMTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n", b"HTTP/1.1\r\n\r\n",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"],
)  # fmt: skip
def test_parse_head_refuses_what_it_cannot_time(answer: bytes) -> None:
    with pytest.raises(ValueError):
        parse_head(answer)


@pytest.mark.parametrize("sides", [1, 2, 3, 4, 7])
def test_pair_order_puts_every_side_after_every_side_once(sides: int) -> None:
    order = pair_order(sides)
    assert len(order) == sides * sides
    pairs = {(order[i], order[(i + 1) % len(order)]) for i in range(len(order))}
    assert pairs == {(a, b) for a in range(sides) for b in range(sides)}
    assert sorted(set(order)) == list(range(sides))


def test_phase_seconds_splits_the_run_among_the_sides() -> None:
    spent = phase_seconds(1.05, 0.1, 2)  # order 0 0 1 1 ...: phases 0,1,4,5,8,9 are side 0
    assert spent[0] == pytest.approx(0.6)
    assert spent[1] == pytest.approx(0.45)
    assert sum(phase_seconds(3.3, 0.25, 3)) == pytest.approx(3.3)
    assert phase_seconds(0.05, 0.1, 3) == pytest.approx([0.05, 0.0, 0.0])


def test_figures_are_nearest_rank_and_nan_without_answers() -> None:
    found = figures([i / 1000 for i in range(1, 101)], 2.0, 3)  # 1..100 ms
    assert found["rps"] == 50
    assert found["p50_ms"] == pytest.approx(50)
    assert found["p99_ms"] == pytest.approx(99)
    assert (found["requests"], found["failed"]) == (100, 3)
    empty = figures([], 1.0, 7)
    assert empty["rps"] == 0 and math.isnan(empty["p50_ms"]) and math.isnan(empty["p99_ms"])
    assert math.isnan(figures([0.001], 0.0, 0)["rps"])


def spec(tmp_path: Path, urls: dict[str, str], **more: Any) -> dict[str, Any]:
    body = tmp_path / "body.json"
    body.write_bytes(b'{"inputs": []}')
    sides = {name: {"url": url, "bodies": [str(body)]} for name, url in urls.items()}
    return {"sides": sides, "c": 1, "seconds": 0.5, "phase_ms": 0} | more


@pytest.mark.parametrize(
    "bad", [{"c": 0}, {"c": -1}, {"seconds": 0}, {"seconds": -2}, {"phase_ms": -1},
            {"c": 2, "phase_ms": 0}, {"sides": {}}],
)  # fmt: skip
def test_a_bad_spec_is_refused(tmp_path: Path, bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Load(spec(tmp_path, {"a": "http://127.0.0.1:1/x"}) | bad)


def test_a_missing_body_file_is_an_error(tmp_path: Path) -> None:
    broken = spec(tmp_path, {"a": "http://127.0.0.1:1/x"})
    broken["sides"]["a"]["bodies"] = [str(tmp_path / "absent.json")]
    with pytest.raises(FileNotFoundError):
        Load(broken)


@pytest.fixture
def server() -> Iterator[str]:
    with paced_server({"/slow": 0.003}, {"/bad": 500}) as url:
        yield url


def test_request_by_request_alternation_times_each_side(server: str, tmp_path: Path) -> None:
    urls = {"fast": f"{server}/fast", "slow": f"{server}/slow", "bad": f"{server}/bad"}
    found = run(spec(tmp_path, urls, seconds=0.6))
    fast, slow, bad = found["fast"], found["slow"], found["bad"]
    assert fast["requests"] > 20 and slow["requests"] > 20
    # turns taken as the pair order says, cut off wherever the time ran out
    counts = [side["requests"] + side["failed"] for side in (fast, slow, bad)]
    order = pair_order(3)
    assert counts == [sum(order[i % len(order)] == n for i in range(sum(counts))) for n in range(3)]
    assert slow["p50_ms"] > fast["p50_ms"] + 2.0  # the 3 ms sleep, on its side only
    assert fast["rps"] > slow["rps"] > 0
    assert bad["requests"] == 0 and bad["failed"] > 20 and math.isnan(bad["p50_ms"])


def test_phases_move_every_connection_together(server: str, tmp_path: Path) -> None:
    urls = {"fast": f"{server}/fast", "slow": f"{server}/slow"}
    found = run(spec(tmp_path, urls, c=4, seconds=0.8, phase_ms=100))
    fast, slow = found["fast"], found["slow"]
    # The slow side's answers take the 3 ms sleep; the fast side's, with 4 connections on a
    # threaded Python server, rose to 1.4 ms on a loaded machine: a 1 ms margin, not 2.
    assert slow["p50_ms"] >= 3.0 and slow["p50_ms"] > fast["p50_ms"] + 1.0
    assert fast["requests"] > slow["requests"] > 40  # 4 connections, 3+ ms each, ~0.4 s
    assert slow["rps"] < 4 / 0.003  # at most 4 slow answers in flight


def test_a_server_closing_the_connection_fails_the_run(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))

    def close_after_reading() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)

    thread = threading.Thread(target=close_after_reading, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/x"
        with pytest.raises(ConnectionError):
            run(spec(tmp_path, {"a": url}))
    finally:
        thread.join(10)
        listener.close()
