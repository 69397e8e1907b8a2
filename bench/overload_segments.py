"""Where a 503's time goes in the overload cell (``bench/overload.py``'s load and probe),
segment by segment, from timestamps taken on both sides of the wire.

The server runs with a ``sitecustomize`` (``SITE``, on its path only) that notes, per
connection, when the event loop accepted it (``connection_made``), first read its bytes
(``data_received``), had its headers parsed (``on_headers_complete``) and wrote its answer
(the header block's write), keyed by the client's port, and (``--lag``) a 1 ms sleep's
overshoot on the loop, timed. The probe (``bench/overload_probe.py``) notes its port,
when its connect began, when its first byte went to the kernel and when the answer's first
byte was read. ``time.perf_counter`` is the system's monotonic clock in both processes.
A probe 503's time splits into: ``accept`` (its bytes waiting for the loop to accept the
connection), ``read`` (accepted, waiting for the loop to read them), ``parse``, ``server``
(headers parsed to the 503 written: ``keepwarm_refusal_seconds``'s span) and ``back``
(written to read by the probe: the kernel and the probe's wake-up).

    python bench/overload_segments.py --tree src --rate 60 --rate 120 --seconds 6

Measured (session 27; other helpers' work kept the machine's load at 2.7-3.5, the server
ran 21-30 req/s, so 60 and 120 req/s offered are about 2x and 4-5x): the probe's 503s at
120 req/s, three runs, p99 31.6-40.7 ms in all, of which ``accept`` p90 13-18 and p99
26-36 ms, ``read`` p99 11-26, ``server`` p99 12-17 (p50 0.5-0.7), ``back`` p99 4-6,
``connect`` p99 2-4 and ``parse`` under 0.6. The kernel agrees on ``accept``: the
connection's last ACK was 4 ms old (p90; 17 ms at p99, 4 ms ticks) when the loop took it
from the accept queue. So most of a refusal's time is the event loop's turn coming round
to the listening socket and then to the connection's bytes, each a pass over the loop's
other work (the reads of 1 MB bodies and the tasks), with the interpreter lock and a
core shared with the decoders and the batch thread (the loop waited 0.46-1.0 ms for a
core per wake-up). The probe is not what is measured: its threads waited 0.1-0.5 ms for a
core per wake-up and ``back`` (its wake-up and the kernel) is 4-6 ms of the p99; the load
client's own loop ran up to 7-22 ms late (p99 of a 2 ms sleep), part of its figure.
With the 503 written by the protocol on the headers (``HttpApp.early_answer``) the
``server`` segment fell to p50 0.24-0.33 and p99 7.7-10 ms (one run at 60 and at 120):
what is left is the loop losing its core or the lock inside that one callback.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from overload import CLIENT, PROBE, PROBE_RATE, loop_schedstat, mobilenet_repo, warm
from overload_metrics import scrape
from peers import first_200
from serve import ROOT
from served import Served

SITE = r"""
import atexit, json, os, time
_path = os.environ.get("OVERLOAD_SEGMENTS")
if _path:
    import asyncio
    from keepwarm.http import protocol as _p
    _rows, _lags, _by = [], [], {}
    _now = time.perf_counter
    _made, _data, _head = (_p.OneWriteProtocol.connection_made,
                           _p.OneWriteProtocol.data_received,
                           _p.OneWriteProtocol.on_headers_complete)
    _write = _p.HeldHead.write
    async def _lag():
        while True:
            began = _now()
            await asyncio.sleep(0.001)
            _lags.append((began, _now() - began - 0.001))
    import socket, struct
    def _ages(transport):
        # the kernel's ms since the connection's last ACK and last data arrived (TCP_INFO)
        sock = transport.get_extra_info("socket")
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        return struct.unpack_from("II", info, 52)
    _init = _p.OneWriteProtocol.__init__
    def __init__(self, *args, **kwargs):
        self._made_at = _now()  # uvloop makes the protocol as it accepts the connection
        _init(self, *args, **kwargs)
    _p.OneWriteProtocol.__init__ = __init__
    def connection_made(self, transport):
        # port, connection_made, first read, headers, answer written, status, TCP ages at
        # connection_made and at the first read, the protocol made (the accept)
        row = [transport.get_extra_info("peername")[1], _now(), 0.0, 0.0, 0.0, 0,
               _ages(transport), None, self._made_at]
        _rows.append(row)
        _by[id(transport)] = row
        if os.environ.get("OVERLOAD_SEGMENTS_LAG") and not _lags:
            _lags.append((_now(), 0.0))
            asyncio.ensure_future(_lag())
        _made(self, transport)
    def data_received(self, data):
        row = _by.get(id(self.transport))
        if row is not None and not row[2]:
            row[2] = _now()
            row[7] = _ages(self.transport)
        _data(self, data)
    def on_headers_complete(self):
        row = _by.get(id(self.transport))
        if row is not None and not row[3]:
            row[3] = _now()
        _head(self)
    def write(self, data):
        head = self._head
        _write(self, data)
        if head is not None:
            row = _by.get(id(self._transport))
            if row is not None and not row[4]:
                row[4] = _now()
                row[5] = int(head[9:12])
    _p.OneWriteProtocol.connection_made = connection_made
    _p.OneWriteProtocol.data_received = data_received
    _p.OneWriteProtocol.on_headers_complete = on_headers_complete
    _p.HeldHead.write = write
    _close = getattr(_p.OneWriteProtocol, "_close_after", None)
    def _close_after(self, answer, cycle):
        _close(self, answer, cycle)
        row = _by.get(id(self.transport))
        if answer and row is not None and not row[4]:
            row[4] = _now()
            row[5] = int(answer[9:12])
    if _close is not None:  # a refusal written by the protocol (early, 408, 431)
        _p.OneWriteProtocol._close_after = _close_after
    def _dump():
        with open(_path, "w") as out:
            json.dump({"rows": _rows, "lags": _lags}, out)
    atexit.register(_dump)
"""


def run(
    tree: Path, repo: Path, body: Path, seconds: float, rate: float, work: Path, lag: bool
) -> dict[str, Any]:
    """One load at ``rate`` with the probe beside it; the joined timestamps."""
    site = work / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITE)
    trace = work / f"segments-{rate:g}.json"
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{tree}",
           "OVERLOAD_SEGMENTS": str(trace)}  # fmt: skip
    if lag:
        env["OVERLOAD_SEGMENTS_LAG"] = "1"
    served = Served(repo, env=env)
    model = "mobilenet_v2"
    first_200(served, {model: body.read_bytes()})
    try:
        warm(served.url, 32, model)
        client = work / "overload_client.py"
        client.write_text(CLIENT)
        load = subprocess.Popen(
            [sys.executable, str(client), served.infer_url(model), str(body), "64",
             str(seconds), str(rate), "64"], stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert load.stdout is not None
        load.stdout.readline()
        probe = subprocess.Popen(
            [sys.executable, str(PROBE), served.infer_url(model), str(body), str(seconds),
             str(PROBE_RATE)], stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(1.0)
        before = (time.perf_counter(), scrape(served.url, model), loop_schedstat(served.proc.pid))
        time.sleep(max(0.5, seconds - 2.0))
        after = (time.perf_counter(), scrape(served.url, model), loop_schedstat(served.proc.pid))
        found = json.loads(load.communicate(timeout=seconds * 20 + 60)[0])
        probed = json.loads(probe.communicate(timeout=seconds * 20 + 60)[0])
    finally:
        served.stop()
    server = json.loads(trace.read_text())
    served_rps = (after[1]["run"] - before[1]["run"]) / (after[0] - before[0])
    runs = after[2][1] - before[2][1]
    loop_wait = (after[2][0] - before[2][0]) / runs / 1000 if runs else float("nan")
    return {"load": found, "probe": probed, "server": server, "served_rps": served_rps,
            "loop_wait_us": loop_wait}  # fmt: skip


def pcts(values: list[float]) -> str:
    if not values:
        return "-"
    p = np.percentile(np.array(values) * 1000, [50, 90, 99])
    return f"{p[0]:7.2f} {p[1]:7.2f} {p[2]:7.2f}"


def report(rate: float, found: dict[str, Any]) -> None:
    rows = {row[0]: row for row in found["server"]["rows"]}
    print(f"\n== offered {rate:g} req/s: served {found['served_rps']:.1f} req/s, "
          f"loop wait per wake {found['loop_wait_us']:.0f} us, "
          f"probe threads' wait per wake {found['probe']['waits']}")  # fmt: skip
    segments: dict[str, list[float]] = {k: [] for k in SEGMENTS}
    kernel: dict[str, list[float]] = {
        name: [] for name in ("ack_age_at_accept", "data_age_at_read", "accepted", "accepted->made")
    }
    for port, status, connecting, began, head_at in found["probe"]["detail"]:
        row = rows.get(port)
        if status != 503 or row is None or not all(row[1:5]):
            continue
        _, accept, first, head, wrote = row[:5]
        kernel["ack_age_at_accept"].append(row[6][1] / 1000)
        kernel["accepted"].append(max(0.0, row[8] - began))
        kernel["accepted->made"].append(row[1] - row[8])
        kernel["data_age_at_read"].append(row[7][0] / 1000)
        parts = {
            "connect": began - connecting,
            "accept": max(0.0, accept - began),
            "read": first - max(accept, began),
            "parse": head - first,
            "server": wrote - head,
            "back": head_at - wrote,
            "total": head_at - began,
        }
        for name, value in parts.items():
            segments[name].append(value)
    print(f"probe 503s ({len(segments['total'])}), ms p50 p90 p99:")
    for name, values in (segments | kernel).items():
        print(f"  {name:8s} {pcts(values)}")
    refused = [r for r in found["server"]["rows"] if r[5] == 503 and all(r[1:5])]
    print(f"server's 503s ({len(refused)}), ms p50 p90 p99:")
    print(f"  accepted->read  {pcts([r[2] - r[1] for r in refused])}")
    print(f"  read->headers   {pcts([r[3] - r[2] for r in refused])}")
    print(f"  headers->503    {pcts([r[4] - r[3] for r in refused])}")
    load = [s for code, _, s in found["load"]["results"] if code == 503]
    ok = [s for code, _, s in found["load"]["results"] if code == 200]
    print(f"load client: 503s {len(load)} {pcts(load)}; 200s {len(ok)} {pcts(ok)}")
    print(f"load client's own lag (2 ms sleep overshoot): {pcts(found['load']['lags'])}")
    lags = [lag for _, lag in found["server"]["lags"][1:]]
    if lags:
        print(f"server loop lag (1 ms sleep overshoot): {pcts(lags)} max {max(lags) * 1000:.1f}")


SEGMENTS = ("connect", "accept", "read", "parse", "server", "back", "total")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", default="src", help="the server's source tree")
    parser.add_argument("--models", type=Path, default=ROOT / ".test-cache/examples/models")
    parser.add_argument("--rate", type=float, action="append")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--lag", action="store_true", help="time the loop's lateness too")
    parser.add_argument("--keep", type=Path, help="write the raw timestamps here (JSON)")
    args = parser.parse_args()
    kept = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repo, body = mobilenet_repo(args.models, work)
        for rate in args.rate or [120.0]:
            found = run(Path(args.tree).resolve(), repo, body, args.seconds, rate, work, args.lag)
            report(rate, found)
            kept[rate] = found
    if args.keep:
        args.keep.write_text(json.dumps(kept))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
