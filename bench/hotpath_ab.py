"""``bench/hotpath.py``'s request-path figures for builds side by side, rounds alternated.

Each round runs, for every ``--tree NAME=PATH/src`` in turn (the order rotated round by
round), one child process with that tree first on ``sys.path`` that measures one model the
way ``hotpath.py`` does (``bench_model``: single-thread overhead over the direct ONNX
Runtime call, 4 and 8 threads against the direct call, each interleaved within the
child). The direct call is in every child, so each figure is judged against a limit
taken in the same process, seconds apart; the builds are compared by the median of their
rounds, so that the machine's drift (2-4x within minutes here) falls on each build alike.

    python bench/hotpath_ab.py --tree now=src --tree old=/tmp/old/src --rounds 4 --quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))


def child(args: argparse.Namespace) -> None:
    from hotpath import bench_model
    from hotpath_models import build_tiny, example_mlp

    with tempfile.TemporaryDirectory(prefix="keepwarm-hotpath-ab-") as tmp:
        work = Path(tmp)
        if args.model == "tiny":
            path = work / "tiny.onnx"
            build_tiny(path)
            x = np.ones((1, 4), np.float32)
        else:
            path, x = example_mlp(), np.ones((1, 784), np.float32)
        print(json.dumps(bench_model(args.model, path, x, args, work)))


def run_child(tree: str, model: str, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=tree, TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, __file__, "--child", "--model", model]
    cmd += ["--calls", str(args.calls), "--thread-rounds", str(args.thread_rounds)]
    cmd += ["--seconds", str(args.seconds)]
    if args.intra_op_threads is not None:
        cmd += ["--intra-op-threads", str(args.intra_op_threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"child for {tree} failed:\n{out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def figures(result: dict[str, Any]) -> dict[str, float]:
    cells = {f"{k} over us": v for k, v in result["overhead_us"].items()}
    cells["direct us"] = result["single_us"]["direct"]
    for n, t in result["threads"].items():
        for name, ratio in t["ratio"].items():
            cells[f"{name} {n}thr x"] = ratio
    return cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[], help="NAME=PATH/src")
    parser.add_argument("--models", default="tiny,mlp")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="20,000 calls, 30 rounds of threads")
    parser.add_argument("--intra-op-threads", type=int)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--thread-rounds", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.rounds = args.thread_rounds
        child(args)
        return 0
    args.calls = 20_000 if args.quick else 100_000
    args.thread_rounds = 30 if args.quick else 80
    args.seconds = 0.05
    trees = dict(t.split("=", 1) for t in args.tree)
    table: dict[str, dict[str, dict[str, list[float]]]] = {}
    for r in range(args.rounds):
        names = list(trees)
        names = names[r % len(names) :] + names[: r % len(names)]
        for model in args.models.split(","):
            for name in names:
                cells = figures(run_child(trees[name], model, args))
                print(f"round {r} {model} {name}: {cells}", flush=True)
                for key, value in cells.items():
                    table.setdefault(model, {}).setdefault(key, {}).setdefault(name, [])
                    table[model][key][name].append(value)
    print(f"\nmedians of {args.rounds} rounds")
    print(f"{'model':<6} {'figure':<24} " + " ".join(f"{n:>10}" for n in trees))
    for model, rows in table.items():
        for key, by_tree in rows.items():
            cells = " ".join(f"{statistics.median(by_tree[n]):>10.3f}" for n in trees)
            print(f"{model:<6} {key:<24} {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
