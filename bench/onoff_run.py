"""``bench/onoff_cells.py``'s one-process cells alone, for one model and concurrency, per
source tree: one server per tree, each serving the model on, off and off again, every
tree's every side in ONE paired run (at c=1 request by request), so that
``--tree before=/work/main/src --tree now=src`` compares the trees' ``on`` sides within the
same milliseconds too. Prints per side the median req/s and p50, per pair the per-round
p50 differences and req/s ratios, and at c=1 the per-cycle shift (``cycle_shift``).

    python bench/onoff_run.py --models .test-cache/examples/models --model mobilenet_v2 \\
        --tree now=src --rounds 24 --seconds 5 [--also mlp]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from ab import remove_worktrees, side_environment
from inproc_ab import trees_given
from onoff_cells import (
    SIDES,
    cycle_shift,
    one_process_repo,
    paired,
    phase_ms,
    run_seconds,
    served_name,
)
from overload import warm
from peers import first_200
from serve import ROOT, Served, write_bodies

Runs = list[dict[str, dict[str, float]]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", default=[], help="NAME=path/to/src")
    parser.add_argument("--commit", action="append", default=[], help="NAME=git revision")
    parser.add_argument("--env", action="append", default=[], help="NAME:VAR=VALUE")
    parser.add_argument("--models", type=Path, default=ROOT / "examples" / "models")
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--also", default="", help="models served beside it, unloaded")
    parser.add_argument("--c", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--dump", type=Path, help="write the rounds' figures and latencies here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="onoff-") as tmp:
        work = Path(tmp)
        if not args.tree and not args.commit:
            args.tree = ["now=src"]
        trees, made = trees_given(args, work)
        models = (args.model, *filter(None, args.also.split(",")))
        repo = one_process_repo(args.models, models, work / "repo")
        every = write_bodies(work)
        bodies = every[args.model]
        servers: list[Served] = []
        try:
            urls = {}
            for name, src in trees.items():
                served = Served(repo, env=side_environment(name, src, args.env))
                servers.append(served)
                first_200(served, {served_name(m, s): every[m][0].read_bytes()
                                   for m in models for s in SIDES})  # fmt: skip
                for model in models:
                    warm(served.url, 32, model)
                for side in SIDES:
                    urls[f"{name}/{side}"] = served.infer_url(served_name(args.model, side))
            phase = phase_ms(args.c, 50.0)
            length = run_seconds(args.seconds, phase, len(urls))
            paired(urls, bodies, args.c, min(length, 2.0), phase, work)  # unmeasured
            found = [paired(urls, bodies, args.c, length, phase, work) for _ in range(args.rounds)]
        finally:
            for served in servers:
                served.stop()
            remove_worktrees(made)
    figures, latencies = [f for f, _ in found], [x for _, x in found]
    if args.dump is not None:
        args.dump.write_text(json.dumps({"figures": figures, "latencies": latencies}))
    show(figures, latencies if args.c == 1 else [], list(trees))
    return 0


def show(runs: Runs, latencies: list[dict[str, list[float]]], trees: list[str]) -> None:
    for side in runs[0]:
        rps = statistics.median(r[side]["rps"] for r in runs)
        p50 = statistics.median(r[side]["p50_ms"] for r in runs)
        print(f"{side:16s} {rps:8.2f} req/s  p50 {p50:8.3f} ms")
    pairs = [(f"{t}/on", f"{t}/off") for t in trees] + [(f"{t}/off2", f"{t}/off") for t in trees]
    pairs += [(f"{t}/{side}", f"{trees[0]}/{side}") for t in trees[1:] for side in ("on", "off")]
    for a, b in pairs:
        diffs = [r[a]["p50_ms"] - r[b]["p50_ms"] for r in runs]
        ratios = [r[a]["rps"] / r[b]["rps"] for r in runs]
        cycles = ""
        if latencies:
            shift, se, n = cycle_shift(latencies, a, b)
            cycles = f"; per cycle {shift:+.3f} +- {se:.3f} ms ({n} cycles)"
        print(f"{a} - {b}: p50 {statistics.median(diffs):+.3f} ms {[round(d, 2) for d in diffs]}"
              f"; req/s {statistics.median(ratios):.3f}x {[round(x, 3) for x in ratios]}"
              f"{cycles}")  # fmt: skip
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
