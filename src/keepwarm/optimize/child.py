"""The child process: ``python -m keepwarm.optimize.child convert|optimize REQUEST.json``.

Converting imports TensorFlow and tf2onnx (seconds, hundreds of MB, and C++ code that can
abort the process); it runs here so that the caller keeps none of it and survives its
failures. ``convert`` converts (``ConversionRequest``); ``optimize`` converts and checks
against the source as well (``OptimizeRequest``: a server converting at load keeps no
TensorFlow memory for a model it serves as ONNX). Requests and results are plain JSON
files; calibration samples are an ``.npz`` of ``<index>/<input name>`` arrays.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ConversionRequest:
    source: str  # the source model's local path (a version directory or a file)
    runtime: str  # "savedmodel", "keras" or "onnx"
    signature: str | None
    output: str  # where the ONNX graph is written
    quantize: str | None
    calibration: str | None  # .npz of ``<index>/<input>`` arrays
    result: str  # where the child writes its ``{"ok": ...}`` JSON

    def to_json(self) -> str:
        return json.dumps(asdict(self))


@dataclass(frozen=True)
class OptimizeRequest:
    source: str  # a version directory or a file
    signature: str | None
    quantize: str | None
    samples: str | None  # the calibration / warmup samples file, if any
    gate: dict[str, float | None]  # Gate's fields
    output: str  # the ONNX graph
    report: str  # the report (JSON)
    result: str  # the child's ``{"ok": ...}``
    runs: int = 5

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def optimize_and_check(request: OptimizeRequest) -> None:
    from keepwarm.optimize.api import optimize
    from keepwarm.optimize.report import Gate

    report = optimize(
        request.source,
        signature=request.signature,
        quantize=request.quantize,
        calibration=request.samples,
        gate=Gate(**request.gate),
        output=request.output,
        runs=request.runs,
        convert_here=True,
    ).report
    Path(request.report).write_text(report.to_json())


def save_calibration(path: Path, requests: list[dict[str, np.ndarray]]) -> None:
    arrays = {f"{i}/{name}": value for i, r in enumerate(requests) for name, value in r.items()}
    np.savez(path, **arrays)  # type: ignore[arg-type]


def load_calibration(path: Path) -> list[dict[str, np.ndarray]]:
    requests: dict[int, dict[str, np.ndarray]] = {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            index, _, name = key.partition("/")
            requests.setdefault(int(index), {})[name] = data[key]
    return [requests[i] for i in sorted(requests)]


def convert(request: ConversionRequest) -> None:
    from keepwarm.optimize import graph
    from keepwarm.runtimes._common import find_file
    from keepwarm.runtimes.registry import get_runtime

    output = Path(request.output)
    work = output.parent
    source = Path(request.source)
    if request.runtime == "onnx":
        found = find_file(source, (".onnx",), ("model.onnx",))
        if found is None:
            raise FileNotFoundError(f"no .onnx file in {source}")
        raw = found
    else:
        model = get_runtime(request.runtime).load(source, signature=request.signature, options={})
        raw = work / "converted.onnx"
        graph.convert_tensorflow(model, raw)
        model.close()
    if request.quantize is None:
        graph.optimize_graph(raw, output, "extended")
        return
    basic = work / "basic.onnx"
    graph.optimize_graph(raw, basic, "basic")
    samples = [] if request.calibration is None else load_calibration(Path(request.calibration))
    graph.quantize(basic, output, request.quantize, samples)


def main(argv: list[str]) -> int:
    mode, file, *parent = argv
    if parent:  # killed (SIGKILL too) or stopped by SIGTERM, its parent leaves no orphan
        from keepwarm.server_child import die_with_parent

        die_with_parent(int(parent[0]))
    data = json.loads(Path(file).read_text())
    kind = ConversionRequest if mode == "convert" else OptimizeRequest
    request: ConversionRequest | OptimizeRequest = kind(**data)
    started = time.perf_counter()
    result: dict[str, Any]
    try:
        if isinstance(request, ConversionRequest):
            convert(request)
        else:
            optimize_and_check(request)
    except BaseException as exc:  # reported to the parent, whatever it was
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        result = {
            "ok": False,
            "error": f"{type(exc).__name__}: {message}"[:2000],
            "traceback": traceback.format_exc()[-4000:],
        }
    else:
        result = {"ok": True, "seconds": time.perf_counter() - started}
    Path(request.result).write_text(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
