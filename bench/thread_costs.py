"""Where a served request's time goes, by thread: CPU µs and context switches per request.

Runs ``keepwarm serve`` on one example model and, for each concurrency, one ``wrk`` run;
``/proc/<pid>/task/*`` is read before and after, and each thread's CPU time, voluntary
and involuntary context switches are divided by the requests answered. Threads are
grouped by name (``tf_Compute``'s threads count as one); Python's own threads all
carry the process's name, so each is shown alone by its id, the main thread (the event
loop's) as ``main``.

Context switches per request hardly move when the machine is loaded, unlike time: a
hand-off between threads costs the woken one a voluntary switch, and each extra switch
beyond one per hand-off is a wait for the interpreter lock (GIL) that its waker still
held. On the MLP at concurrency 1 (session 15) the event loop made 2.3-2.9 voluntary
switches per request, the batch thread 2.0-2.3, TensorFlow's inter-op thread
(``tf_Compute``) exactly 1: every signature call hops to it and back, the direct call's
included.

    python bench/thread_costs.py --models .test-cache/examples/models --model mlp --c 1,32
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from peers import first_200
from serve import LUA, MODELS, ROOT, Served, write_bodies, wrk

TICK = os.sysconf("SC_CLK_TCK")
_SWITCHES = re.compile(r"^(voluntary|nonvoluntary)_ctxt_switches:\s+(\d+)$", re.MULTILINE)


@dataclass(frozen=True)
class ThreadStat:
    name: str
    cpu_seconds: float
    voluntary: int
    involuntary: int


def thread_stats(pid: int) -> dict[int, ThreadStat]:
    """Per live thread of ``pid``: its name, CPU seconds and context switches so far."""
    found: dict[int, ThreadStat] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            status = (task / "status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        switches = dict(_SWITCHES.findall(status))
        found[int(task.name)] = ThreadStat(
            name,
            (int(fields[11]) + int(fields[12])) / TICK,
            int(switches.get("voluntary", 0)),
            int(switches.get("nonvoluntary", 0)),
        )
    return found


def group_name(pid: int, tid: int, name: str) -> str:
    """A thread's group: ``main`` for the process's first thread; a Python thread (named
    as its process) by its id; any other by its name without a ``_N`` or ``-N`` index."""
    if tid == pid:
        return "main"
    if name.startswith("python"):
        return f"{name} {tid}"
    return re.sub(r"[_-]\d+$", "", name)


def per_request(
    pid: int, before: dict[int, ThreadStat], after: dict[int, ThreadStat], requests: int
) -> list[dict[str, float | str]]:
    """Per thread group that did anything between the snapshots: CPU µs, voluntary and
    involuntary switches per request (threads born meanwhile count from zero), busiest
    first."""
    groups: dict[str, list[float]] = {}
    for tid, now in after.items():
        then = before.get(tid, ThreadStat(now.name, 0.0, 0, 0))
        cpu = now.cpu_seconds - then.cpu_seconds
        voluntary, involuntary = now.voluntary - then.voluntary, now.involuntary - then.involuntary
        if cpu <= 0 and voluntary + involuntary == 0:
            continue
        sums = groups.setdefault(group_name(pid, tid, now.name), [0.0, 0.0, 0.0])
        sums[0] += cpu
        sums[1] += voluntary
        sums[2] += involuntary
    n = max(requests, 1)
    rows: list[dict[str, float | str]] = [
        {"thread": name, "cpu_us": cpu / n * 1e6, "voluntary": vol / n, "involuntary": inv / n}
        for name, (cpu, vol, inv) in groups.items()
    ]
    return sorted(rows, key=lambda row: -float(row["cpu_us"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / "examples" / "models")
    parser.add_argument("--model", default="mlp", choices=MODELS)
    parser.add_argument("--c", default="1,32", help="concurrencies, comma-separated")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        (scratch / "models").mkdir()
        shutil.copytree(args.models / args.model, scratch / "models" / args.model)
        script = scratch / "bodies.lua"
        script.write_text(LUA)
        bodies = write_bodies(scratch)[args.model]
        server = Served(scratch / "models")
        try:
            first_200(server, {args.model: bodies[0].read_bytes()})
            url = server.infer_url(args.model)
            for c in (int(x) for x in args.c.split(",")):
                wrk(url, bodies, c, 1, script)  # connections, threads and first batches
                before = thread_stats(server.proc.pid)
                figures = wrk(url, bodies, c, args.seconds, script)
                after = thread_stats(server.proc.pid)
                answered = round(figures["rps"] * args.seconds)
                rows = per_request(server.proc.pid, before, after, answered)
                results.append({"model": args.model, "c": c, **figures, "threads": rows})
                report(args.model, c, figures, rows)
        finally:
            server.stop()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def report(
    model: str, c: int, figures: dict[str, float], rows: list[dict[str, float | str]]
) -> None:
    print(f"\n{model} c={c}: {figures['rps']:.0f} req/s, p50 {figures['p50_ms']:.3f} ms")
    print(f"{'thread':24s}{'CPU us/req':>12s}{'vol/req':>9s}{'invol/req':>10s}")
    for row in rows:
        if float(row["cpu_us"]) < 0.5 and float(row["voluntary"]) < 0.05:
            continue  # idle threads: kept in the JSON, left out of the table
        print(f"{row['thread']!s:24s}{row['cpu_us']:12.1f}{row['voluntary']:9.2f}"
              f"{row['involuntary']:10.2f}")  # fmt: skip
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
