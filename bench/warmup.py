"""Warmup: the first real request of a freshly loaded version against the next 100.

For each example model, a fresh ``Repository`` serves one version; once it is READY, the
first request and the next 100 are timed through ``repo.lease(...).predict``. Run with
warmup (the default, 3 runs of inputs generated from the signature) and without, in the
same process. Target: with warmup, the first request costs at most 1.5x the median of the
next 100. The first request also pays for cold CPU caches (the loader thread, not this one,
ran the warmup), which back-to-back requests do not: for models that run in well under a
millisecond that alone is several times their hot cost. The last columns compare it with
requests made after a short idle pause, which isolates what warmup is for (tracing, graph
optimisation, first allocations). Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from environment import environment

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.5
NEXT = 100
IDLE_S = 0.05
IDLE_N = 20
MODELS = ["mlp", "mlp_keras", "mlp_onnx", "mobilenet_v2", "mobilenet_v2_keras", "mobilenet_v2_onnx"]


def measure(models: Path, name: str, runs: int) -> dict[str, Any]:
    from keepwarm.repository import Repository

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(models / name / "1", root / name / "1")
        (root / name / "1" / ".keepwarm-ready").touch()
        (root / name / "model.toml").write_text(f"[warmup]\nruns = {runs}\n")
        with Repository(root, poll_seconds=3600, watch=False) as repo:
            repo.wait_ready(name, timeout=300)
            with repo.lease(name) as model:
                spec = model.signature.inputs[0]
                shape = tuple(1 if d is None else d for d in spec.shape or (1,))
            x = np.random.default_rng(0).random(shape).astype(spec.dtype)

            def call() -> float:
                start = time.perf_counter()
                with repo.lease(name) as model:
                    model.predict(x)
                return (time.perf_counter() - start) * 1e3

            times = [call() for _ in range(NEXT + 1)]
            idle = []  # each after an idle pause: CPU caches cold, as for the first
            for _ in range(IDLE_N):
                time.sleep(IDLE_S)
                idle.append(call())
    median = statistics.median(times[1:])
    idle_median = statistics.median(idle)
    return {
        "model": name,
        "warmup_runs": runs,
        "first_ms": times[0],
        "median_next_ms": median,
        "ratio": times[0] / median,
        "median_after_idle_ms": idle_median,
        "ratio_after_idle": times[0] / idle_median,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / "examples" / "models")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "warmup.json")
    parser.add_argument("--quick", action="store_true", help="the MLP formats only")
    args = parser.parse_args(argv)
    if not (args.models / "mlp").exists():
        from keepwarm.examples import build_examples

        args.models = build_examples(args.models.parent)
    names = [m for m in MODELS if not args.quick or m.startswith("mlp")]
    rows = [measure(args.models, name, runs) for name in names for runs in (3, 0)]
    print(
        f"{'model':20} {'warmup':>6} {'first ms':>9} {'median next 100':>16} {'ratio':>6}"
        f" {'median after idle':>18} {'ratio':>6}"
    )
    for r in rows:
        print(
            f"{r['model']:20} {r['warmup_runs']:>6} {r['first_ms']:>9.3f} "
            f"{r['median_next_ms']:>16.3f} {r['ratio']:>6.2f} "
            f"{r['median_after_idle_ms']:>18.3f} {r['ratio_after_idle']:>6.2f}"
        )
    failed = [r for r in rows if r["warmup_runs"] and r["ratio"] > TARGET]
    for r in rows:
        if r["warmup_runs"]:
            verdict = "FAIL" if r in failed else "PASS"
            print(
                f"{verdict}  {r['model']}: first / median of next {NEXT} = {r['ratio']:.2f} "
                f"(target <= {TARGET})"
            )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    report = {**environment(args, ("tensorflow", "keras", "onnxruntime")), "target": TARGET}
    args.json.write_text(json.dumps({**report, "rows": rows}, indent=2))
    print(f"wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
