"""Where the server's time goes during the overload cell (``bench/overload.py``):
each server thread's CPU seconds (from ``/proc``) and, with ``--spy``, what holds the GIL
(``py-spy record --gil --threads``), by thread and by the innermost keepwarm (or first
library) frame, so that a stall of the event loop can be laid at some code's door.

    python bench/overload_trace.py --tree src --rate 195 --seconds 8 --spy

A refusal waits for the loop, and the loop waits for the GIL: every sample in which a
thread other than the loop's holds the GIL is time the loop could not have run.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from overload import CLIENT, mobilenet_repo
from serve import ROOT
from serve_batching import serve

TICK = os.sysconf("SC_CLK_TCK")
SPY = Path(sys.executable).parent / "py-spy"


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (threads of one name summed)."""
    out: dict[str, float] = collections.defaultdict(float)
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        out[name] += (int(fields[11]) + int(fields[12])) / TICK
    return out


def where(stack: str) -> str:
    """A raw py-spy stack's innermost keepwarm frame and its innermost frame."""
    frames = stack.split(";")
    for frame in reversed(frames):
        if "keepwarm" in frame:
            return frame if frame == frames[-1] else f"{frame} > {frames[-1]}"
    return frames[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", default="src", help="the server's source tree")
    parser.add_argument("--models", type=Path, default=ROOT / ".test-cache/examples/models")
    parser.add_argument("--rate", type=float, default=195.0)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--spy", action="store_true", help="sample the GIL holder (py-spy)")
    parser.add_argument(
        "--spy-bin", type=Path, default=SPY if SPY.exists() else Path(shutil.which("py-spy") or SPY)
    )
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--raw", type=Path, help="keep py-spy's raw stacks here")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(Path(args.tree).resolve())}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repo, body = mobilenet_repo(args.models, work)
        served = serve(repo, {"mobilenet_v2": body.read_bytes()}, env)
        pid = served.proc.pid
        raw = work / "spy.txt"
        try:
            spy = None
            if args.spy:
                spy = subprocess.Popen(
                    [str(args.spy_bin), "record", "--gil", "--threads", "--nonblocking",
                     "-r", "250", "-f", "raw", "-o", str(raw), "-d", str(int(args.seconds) + 1),
                     "--pid", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                time.sleep(0.5)
            client = work / "client.py"
            client.write_text(CLIENT)
            before, began = thread_cpu(pid), time.perf_counter()
            load = os.getloadavg()[0]
            done = subprocess.run(
                [sys.executable, str(client), served.infer_url("mobilenet_v2"),
                 str(body), "64", str(args.seconds), str(args.rate)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            wall = time.perf_counter() - began
            after = thread_cpu(pid)
            if spy is not None:
                spy.wait(timeout=60)
        finally:
            served.stop()
        import json

        import numpy as np

        found = json.loads(done.stdout.splitlines()[-1])["results"]
        for code in (200, 503):
            times = [s for c, _, s in found if c == code]
            if times:
                p = np.percentile(times, [50, 99]) * 1000
                print(f"{code}: {len(times)}  p50 {p[0]:.1f} ms  p99 {p[1]:.1f} ms")
        print(f"load {load:.1f}; server CPU by thread over {wall:.1f} s:")
        for name in sorted(after, key=lambda n: after[n] - before.get(n, 0.0), reverse=True):
            spent = after[name] - before.get(name, 0.0)
            if spent > 0.01:
                print(f"  {name:24s} {spent:7.2f} s  {100 * spent / wall:5.1f}%")
        if args.spy and raw.exists():
            report(raw.read_text(), args.top)
            if args.raw:
                shutil.copy(raw, args.raw)
    return 0


def report(text: str, top: int) -> None:
    by_thread: dict[str, int] = collections.Counter()
    by_frame: dict[tuple[str, str], int] = collections.Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        thread, _, rest = stack.partition(";")
        n = int(count)
        total += n
        by_thread[thread] += n
        by_frame[(thread, where(rest))] += n
    print(f"GIL held in {total} samples:")
    for thread, n in by_thread.most_common():
        print(f"  {100 * n / total:5.1f}%  {thread}")
    for (thread, frame), n in by_frame.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {thread[:30]:30s} {frame}")


if __name__ == "__main__":
    raise SystemExit(main())
