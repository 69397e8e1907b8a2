"""Issue 9's in-process cell (``keepwarm.load`` with batching on against off, N threads
calling ``predict``) for several builds at once, interleaved.

Each side (``--tree NAME=PATH/src`` or ``--commit NAME=REV``, as ``bench/ab.py``; one tree
alone measures that build's cell; the same tree twice shows the noise) is a
process of its own that loads the model twice (batching on and off) and waits for orders;
every round runs, per thread count, each side's off and on loops in turn (a rotating
order), one process at a time, so that the machine's drift hits every side alike. A side's
figure per round is its own on/off ratio (req/s), measured within seconds; printed, per
side and thread count: the median ratio and the rounds', CPU µs per call on and off, p50
(ms), context switches per call on and off, and the batch sizes its batcher formed
(``BatchStats.batch_sizes``, all rounds). Rounds of 1 s on this 2-core machine vary
0.6-1.5x; 10 rounds of 3 s gave two copies of one build medians within 0.03 of each other.

    python bench/inproc_ab.py --commit base=main --tree now=src --threads 1,4,8,32
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ab import remove_worktrees, side_environment, sides
from serve import MODELS, ROOT


def serve_side(model_dir: str, model: str) -> None:
    """The side's process: load, then for each line ``THREADS SECONDS on|off`` on stdin,
    run the loop and print its figures (and the batcher's batch sizes so far) as JSON."""
    import keepwarm
    from batching_ab import timed_loop
    from serve import inputs

    x = inputs(model, 1)[0]
    cache = keepwarm.ModelCache()
    models = {
        "off": keepwarm.load(model_dir, batching=False, cache=cache),
        "on": keepwarm.load(model_dir, batching=True, cache=cache),
    }
    for loaded in models.values():
        for _ in range(100):
            loaded.predict(x)
    lease = models["on"].acquire()
    batcher = lease.model.raw.batcher
    lease.release()
    print("ready", flush=True)
    for line in sys.stdin:
        threads, seconds, side = line.split()
        before = batcher.stats().batch_sizes
        figures = timed_loop(models[side].predict, x, int(threads), float(seconds))
        after = batcher.stats().batch_sizes
        figures["sizes"] = {
            k: v - before.get(k, 0) for k, v in after.items() if v > before.get(k, 0)
        }
        print(json.dumps(figures), flush=True)
    cache.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", default=[], help="NAME=path/to/src")
    parser.add_argument("--commit", action="append", default=[], help="NAME=git revision")
    parser.add_argument("--models", type=Path, default=ROOT / ".test-cache/examples/models")
    parser.add_argument("--model", default="mlp", choices=MODELS)
    parser.add_argument("--threads", default="1,4,8,32", help="thread counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--env", action="append", default=[],
                        help="NAME:VAR=VALUE, an environment variable for one side")  # fmt: skip
    parser.add_argument("--json", type=Path, help="write every run here")
    parser.add_argument("--side", help=argparse.SUPPRESS)  # a side's own process
    args = parser.parse_args()
    if args.side:
        serve_side(args.side, args.model)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        model_dir = scratch / args.model
        shutil.copytree(args.models / args.model, model_dir)
        (model_dir / "model.toml").unlink(missing_ok=True)  # batching as load() says only
        trees, made = trees_given(args, scratch)
        try:
            return run(args, trees, model_dir)
        finally:
            remove_worktrees(made)


def trees_given(args: argparse.Namespace, scratch: Path) -> tuple[dict[str, Path], list[Path]]:
    """``ab.sides``, or for one ``--tree`` (no ``--commit``) that tree alone: each tree's
    own batching on against off needs no second one."""
    if len(args.tree) == 1 and not args.commit:
        name, _, path = args.tree[0].partition("=")
        return {name: Path(path).resolve()}, []
    return sides(args, scratch)


def run(args: argparse.Namespace, trees: dict[str, Path], model_dir: Path) -> int:
    procs = {}
    for name, src in trees.items():
        procs[name] = subprocess.Popen(
            [sys.executable, __file__, "--side", str(model_dir), "--model", args.model],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            stderr=subprocess.DEVNULL, cwd=Path(__file__).parent,
            env=side_environment(name, src, args.env),
        )  # fmt: skip
    try:
        for proc in procs.values():
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        threads = [int(n) for n in args.threads.split(",")]
        runs: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
        names = list(procs)
        for index in range(args.rounds):
            for n in threads:
                order = names[index % len(names) :] + names[: index % len(names)]
                for name in order:
                    for side in ("off", "on") if index % 2 == 0 else ("on", "off"):
                        runs.setdefault((name, n, side), []).append(
                            ask(procs[name], f"{n} {args.seconds} {side}")
                        )
        report(names, threads, runs)
        if args.json:
            rows = [{"side": k[0], "threads": k[1], "batching": k[2], "runs": v}
                    for k, v in runs.items()]  # fmt: skip
            args.json.write_text(json.dumps(rows, indent=1))
    finally:
        for proc in procs.values():
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(60)
    return 0


def ask(proc: subprocess.Popen[str], order: str) -> dict[str, Any]:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(order + "\n")
    proc.stdin.flush()
    figures: dict[str, Any] = json.loads(proc.stdout.readline())
    return figures


def report(
    names: list[str], threads: list[int], runs: dict[tuple[str, int, str], list[dict[str, Any]]]
) -> None:
    print(f"{'side':>8} {'threads':>7} {'ratio':>6} {'off/s':>7} {'on/s':>7} {'cpu off':>7} "
          f"{'cpu on':>7} {'p50 off':>7} {'p50 on':>7} {'sw off':>6} {'sw on':>6}  "
          "rounds; batch sizes (on)")  # fmt: skip
    for n in threads:
        for name in names:
            off, on = runs[(name, n, "off")], runs[(name, n, "on")]
            ratios = [b["rps"] / a["rps"] for a, b in zip(off, on, strict=True)]

            def med(rows: list[dict[str, Any]], key: str) -> float:
                return statistics.median(r[key] for r in rows)

            sizes: dict[str, int] = {}
            for r in on:
                for k, v in r["sizes"].items():
                    sizes[k] = sizes.get(k, 0) + v
            print(f"{name:>8} {n:7d} {statistics.median(ratios):6.3f} {med(off, 'rps'):7.0f} "
                  f"{med(on, 'rps'):7.0f} {med(off, 'cpu_us'):7.1f} {med(on, 'cpu_us'):7.1f} "
                  f"{med(off, 'p50_ms'):7.3f} {med(on, 'p50_ms'):7.3f} "
                  f"{med(off, 'switches'):6.2f} {med(on, 'switches'):6.2f}  "
                  f"{[round(r, 2) for r in ratios]}; {sizes}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
