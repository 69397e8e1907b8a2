"""keepwarm optimize: what each conversion costs and saves, measured in one run.

For MobileNetV2 (random weights), the example MLP (random weights) and the digits model
(trained; accuracy on its held-out test split), each of ONNX, ONNX + dynamic int8 and
ONNX + float16 (and, for digits, ONNX + static int8) is built with
``keepwarm.optimize.optimize`` and compared with the SavedModel it came from: weights and
file sizes, median latency at batch 1 and batch 32 (source and result timed alternately),
the largest change of any output, top-1 agreement, and accuracy.

Targets (exit 1 when one is missed):

- MobileNetV2 served through ``Repository.lease`` at batch 1 from one thread: with
  ``[optimize] to = "onnx"`` in its model.toml (the graph converted at load) it answers at
  least 2x as many requests per second as served from its SavedModel; both from one
  repository, timed in alternating rounds.
- digits quantized to int8 (dynamic): at most 0.35x the size of the float32 ONNX file,
  with at most 1 point of accuracy lost on the test split.

float16 on a CPU without native float16 arithmetic saves size, not time: ONNX Runtime
runs most of its operators in float32 and casts around them.
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
SPEEDUP_TARGET = 2.0
INT8_SIZE_TARGET = 0.35
ACCURACY_DROP_TARGET = 1.0
VARIANTS: dict[str, tuple[str | None, ...]] = {
    "mobilenet_v2": (None, "dynamic", "float16"),
    "mlp": (None, "dynamic", "float16"),
    "digits": (None, "dynamic", "float16", "static"),
}
QUICK: dict[str, tuple[str | None, ...]] = {  # what the targets need, and no more
    "mobilenet_v2": (None,),
    "digits": (None, "dynamic"),
}


def variants(
    models: Path, work: Path, runs: int, which: dict[str, tuple[str | None, ...]]
) -> list[dict[str, Any]]:
    from keepwarm.optimize import Gate, optimize

    rows = []
    for name, modes in which.items():
        calibration = models / name / "1" / "test.npz" if name == "digits" else None
        for mode in modes:
            graph = work / f"{name}-{mode or 'fp32'}.onnx"
            started = time.perf_counter()
            report = optimize(
                models / name,
                quantize=mode,
                calibration=calibration,
                output=graph,
                gate=Gate(),  # measure only
                runs=runs,
            ).report
            rows.append(
                {
                    "model": name,
                    "variant": "onnx" + (f" + {mode}" if mode else ""),
                    "seconds": time.perf_counter() - started,
                    **report.to_dict(),
                }
            )
            print(f"  {name:<13} {rows[-1]['variant']:<16} {rows[-1]['seconds']:5.1f} s")
    return rows


def served_throughput(models: Path, work: Path, seconds: float) -> dict[str, Any]:
    """MobileNetV2 requests per second through ``Repository.lease`` at batch 1, one thread,
    from one repository: ``savedmodel`` serves the SavedModel, ``auto`` the same SavedModel
    with ``[optimize] to = "onnx"`` in its model.toml (converted at load)."""
    from keepwarm.repository import Repository
    from keepwarm.sources.filesystem import MARKER

    root = work / "repo"
    for name in ("savedmodel", "auto"):
        shutil.copytree(models / "mobilenet_v2" / "1", root / name / "1")
        (root / name / "1" / MARKER).touch()
    (root / "auto" / "model.toml").write_text('[optimize]\nto = "onnx"\n')
    x = np.random.default_rng(0).random((1, 224, 224, 3), dtype=np.float32)
    rates: dict[str, list[float]] = {"savedmodel": [], "auto": []}
    with Repository(root, poll_seconds=3600, watch=False) as repo:
        started = time.perf_counter()
        for name in rates:
            repo.wait_ready(name, timeout=600)
        load_seconds = time.perf_counter() - started
        served = str(repo.status().models["auto"].versions[1].reason)
        rounds = 12
        for _ in range(rounds):  # alternate, so that both see the same machine
            for name, into in rates.items():
                count = 0
                begun = time.perf_counter()
                end = begun + seconds / rounds
                while time.perf_counter() < end:
                    with repo.lease(name) as model:
                        model.predict({"image": x})
                    count += 1
                into.append(count / (time.perf_counter() - begun))
    # Each round's ratio, then their median: a burst of load from elsewhere on the machine
    # spoils a round, not the figure.
    ratios = [a / s for a, s in zip(rates["auto"], rates["savedmodel"], strict=True)]
    print(f"  both READY in {load_seconds:.1f} s; auto: {served}")
    return {
        "savedmodel_rps": statistics.median(rates["savedmodel"]),
        "onnx_rps": statistics.median(rates["auto"]),
        "speedup": statistics.median(ratios),
        "round_speedups": ratios,
        "auto_status": served,
        "ready_seconds": load_seconds,
    }


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _at(row: dict[str, Any], batch: int, key: str) -> float | None:
    found = [lat[key] for lat in row["latency"] if lat["batch"] == batch]
    return found[0] if found else None


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'model':<13} {'variant':<16} {'weights':>9} {'file':>9} {'b1 ms':>8} {'b32 ms':>8}"
        f" {'b1 x':>6} {'b32 x':>6} {'max|diff|':>10} {'top-1':>7} {'accuracy':>9}"
    )
    seen = set()
    for r in rows:
        if r["model"] not in seen:  # the source, once per model, from its first comparison
            seen.add(r["model"])
            source = r["source"]
            print(
                f"{r['model']:<13} {'savedmodel':<16} {source['nbytes']:>9,}"
                f" {source['file_bytes']:>9,} {_fmt(_at(r, 1, 'source_ms'), '.3f'):>8}"
                f" {_fmt(_at(r, 32, 'source_ms'), '.3f'):>8} {'1.00':>6} {'1.00':>6}"
                f" {'-':>10} {'-':>7} {_fmt(r['accuracy_source'], '.2%'):>9}"
            )
        out = r["outputs"][0]
        print(
            f"{r['model']:<13} {r['variant']:<16} {r['result']['nbytes']:>9,}"
            f" {r['result']['file_bytes']:>9,} {_fmt(_at(r, 1, 'result_ms'), '.3f'):>8}"
            f" {_fmt(_at(r, 32, 'result_ms'), '.3f'):>8} {_fmt(_at(r, 1, 'speedup'), '.2f'):>6}"
            f" {_fmt(_at(r, 32, 'speedup'), '.2f'):>6} {out['max_abs_diff']:>10.2e}"
            f" {_fmt(out['top1_agreement'], '.2%'):>7} {_fmt(r['accuracy_result'], '.2%'):>9}"
        )


def targets(rows: list[dict[str, Any]], served: dict[str, Any]) -> list[tuple[bool, str]]:
    digits = {r["variant"]: r for r in rows if r["model"] == "digits"}
    fp32, int8 = digits["onnx"], digits["onnx + dynamic"]
    ratio = int8["result"]["file_bytes"] / fp32["result"]["file_bytes"]
    drop = int8["accuracy_drop_points"]
    onnx_served = served["auto_status"].startswith("serving the ONNX graph")
    return [
        (
            onnx_served and served["speedup"] >= SPEEDUP_TARGET,
            f"MobileNetV2 through Repository.lease, batch 1, one thread: [optimize] ONNX "
            f"{served['onnx_rps']:.1f} req/s vs SavedModel {served['savedmodel_rps']:.1f} req/s"
            f" (medians of {len(served['round_speedups'])} alternating rounds): median ratio "
            f"{served['speedup']:.2f}x (target >= {SPEEDUP_TARGET}x)",
        ),
        (
            ratio <= INT8_SIZE_TARGET,
            f"digits int8 (dynamic) file {ratio:.2f}x the float32 ONNX file "
            f"(target <= {INT8_SIZE_TARGET}x)",
        ),
        (
            drop <= ACCURACY_DROP_TARGET,
            f"digits int8 (dynamic) accuracy {int8['accuracy_result']:.2%} vs "
            f"{int8['accuracy_source']:.2%}: drop {drop:.2f} points "
            f"(target <= {ACCURACY_DROP_TARGET})",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / "examples" / "models")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "optimize.json")
    parser.add_argument("--quick", action="store_true", help="fewer timed calls")
    args = parser.parse_args(argv)
    if not all((args.models / name).exists() for name in VARIANTS):
        from keepwarm.examples import build_examples

        args.models = build_examples(args.models.parent)
    runs, seconds = (5, 3.0) if args.quick else (30, 12.0)
    with tempfile.TemporaryDirectory(prefix="keepwarm-bench-optimize-") as tmp:
        print("converting (each in a child process):")
        rows = variants(args.models, Path(tmp), runs, QUICK if args.quick else VARIANTS)
        print()
        print_table(rows)
        print(
            "\nb1 x, b32 x: the source's median latency over the variant's (same run). float16"
            " saves size, not time, on CPUs without native float16 arithmetic.\n"
        )
        print("serving MobileNetV2 through Repository.lease:")
        served = served_throughput(args.models, Path(tmp), seconds)
    checks = targets(rows, served)
    for ok, text in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    report = environment(args, ("tensorflow", "onnxruntime", "tf2onnx", "onnxconverter-common"))
    report.update(
        rows=rows,
        served=served,
        targets=[{"passed": ok, "what": text} for ok, text in checks],
    )
    args.json.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")
    return 0 if all(ok for ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
