"""What the server's event loop is doing while it is late under overload: waiting for a
core, waiting for the interpreter lock, or running (``bench/overload_segments.py``'s load,
probe and loop-lateness timer, with every server thread's ``/proc/<pid>/task/<tid>/
schedstat`` sampled beside it).

A thread in this process reads, every ``--interval`` seconds while the load runs, each
server thread's nanoseconds on a core and waiting runnable for one (the kernel's
schedstat: exact, not ticks). Each stall of the loop (its 1 ms sleep woke more than
``--stall`` ms late) is then split into the loop's own time on a core, its time waiting
for one, and the rest (asleep: on the interpreter lock, since a due timer ends the poll),
with the CPU time of the other threads, by name, in the same window.

    python bench/overload_stalls.py --tree src --rate 40 --seconds 8

Measured (session 28, a quiet machine, 40 req/s offered: about 1.1x what MobileNetV2
served, ``bench/serve_batching.py``'s overload cell's rate): 100 stalls over 6 ms in 8 s
(the slowest 503s, 19-23 ms, each met one of 13-19 ms). Over those stalls' 822 ms the loop
waited for a core 600 ms (73%), ran 138 and slept under 90; a second run, 118 stalls
over 1075 ms: waited 614 (57%), ran 183, slept 277. The loop was mostly not waiting for
the lock but for a core, which TensorFlow's two compute threads (0.42 of a core each
over the load), the decoders (five threads, 0.04 each) and the clients held. The loop
itself ran 0.135 of a core and waited for one 0.28 of the time. What was tried against
it (``keepwarm.thread_priority``'s docstring): a short scheduler slice for the loop (no
help) and the loop at a higher priority (fewer of the probe's slow 503s, but the load
client's p99 no better and fewer requests served).
"""

from __future__ import annotations

import argparse
import bisect
import collections
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from overload import mobilenet_repo
from overload_segments import run
from serve import ROOT

Sample = tuple[float, dict[int, tuple[int, int]]]


def _children(parent: int, marker: bytes) -> list[int]:
    """Processes whose parent is ``parent`` and whose command line holds ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and marker in command:
            found.append(int(entry))
    return found


class Sampler(threading.Thread):
    """Every server thread's (run ns, wait ns), timed, while the load client runs."""

    def __init__(self, interval: float) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[Sample] = []
        self.names: dict[int, str] = {}
        self.server = 0
        self.done = threading.Event()

    def run(self) -> None:
        me = os.getpid()
        while not self.done.is_set():
            servers = _children(me, b"keepwarm\x00serve")
            clients = _children(me, b"overload_client.py")
            if servers and clients:
                self.server, client = servers[0], clients[0]
                break
            time.sleep(0.05)
        else:
            return
        files: dict[int, int] = {}
        while os.path.exists(f"/proc/{client}") and not self.done.is_set():
            if len(self.samples) % 200 == 0:
                self._open(files)
            row: dict[int, tuple[int, int]] = {}
            for tid, fd in files.items():
                try:
                    ran, waited, _ = os.pread(fd, 100, 0).split()
                except (OSError, ValueError):
                    continue
                row[tid] = (int(ran), int(waited))
            self.samples.append((time.perf_counter(), row))
            time.sleep(self.interval)
        for fd in files.values():
            os.close(fd)

    def _open(self, files: dict[int, int]) -> None:
        for task in Path(f"/proc/{self.server}/task").iterdir():
            tid = int(task.name)
            if tid not in files:
                try:
                    self.names[tid] = (task / "comm").read_text().strip()
                    files[tid] = os.open(task / "schedstat", os.O_RDONLY)
                except OSError:
                    continue


def report(found: dict[str, Any], sampler: Sampler, stall: float) -> None:
    times = [at for at, _ in sampler.samples]
    if len(times) < 2:
        print("no samples (the server or the load client was not found)")
        return

    def at(when: float) -> Sample:
        return sampler.samples[min(bisect.bisect_left(times, when), len(times) - 1)]

    results = found["load"]["results"]
    first, last = min(r[1] for r in results), max(r[1] for r in results)
    lags = [(t, lag) for t, lag in found["server"]["lags"][1:] if first <= t <= last]
    loop = sampler.server
    totals = [0.0, 0.0, 0.0]
    others: collections.Counter[str] = collections.Counter()
    stalls = [(t, lag) for t, lag in lags if lag > stall / 1000]
    for began, lag in stalls:
        (t0, s0), (t1, s1) = at(began + 0.001), at(began + 0.001 + lag)
        if t1 <= t0 or loop not in s0 or loop not in s1:
            continue
        totals[0] += (s1[loop][0] - s0[loop][0]) / 1e6
        totals[1] += (s1[loop][1] - s0[loop][1]) / 1e6
        totals[2] += (t1 - t0) * 1000
        for tid, (on_core, _) in s1.items():
            if tid != loop and tid in s0:
                others[sampler.names.get(tid, "?")] += (on_core - s0[tid][0]) / 1e6
    ran, waited, window = totals
    print(f"\nloop stalls over {stall:g} ms in the load: {len(stalls)}, windows {window:.0f} ms: "
          f"the loop ran {ran:.0f}, waited for a core {waited:.0f}, asleep (the lock) "
          f"{max(0.0, window - ran - waited):.0f}")  # fmt: skip
    print("  other threads' ms on a core then:", {k: round(v) for k, v in others.most_common(6)})
    (t0, s0), (t1, s1) = sampler.samples[0], sampler.samples[-1]
    print(f"per thread over {t1 - t0:.1f} s (share of a core on it; waiting for one):")
    shares = sorted(
        ((s1[tid][0] - s0[tid][0]) / 1e9 / (t1 - t0), (s1[tid][1] - s0[tid][1]) / 1e9 / (t1 - t0),
         tid) for tid in s1 if tid in s0
    )  # fmt: skip
    for ran_share, wait_share, tid in reversed(shares[-8:]):
        name = "event loop" if tid == loop else sampler.names.get(tid, "?")
        print(f"  {tid:8d} {name:16s} {ran_share:6.3f} {wait_share:6.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--tree", default="src", help="the server's source tree")
    parser.add_argument("--models", type=Path, default=ROOT / ".test-cache/examples/models")
    parser.add_argument("--interval", type=float, default=0.001, help="seconds per sample")
    parser.add_argument("--stall", type=float, default=6.0, help="ms late: a stall")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repo, body = mobilenet_repo(args.models, work)
        sampler = Sampler(args.interval)
        sampler.start()
        try:
            found = run(Path(args.tree).resolve(), repo, body, args.seconds, args.rate, work, True)
        finally:
            sampler.done.set()
            sampler.join()
    report(found, sampler, args.stall)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
