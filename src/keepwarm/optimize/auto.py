"""Serving the faster graph automatically: ``[optimize]`` in ``model.toml``.

At load, a SavedModel or Keras version is converted and checked against the source on
the warmup samples (or generated inputs) by ``keepwarm.optimize.optimize``, all in one
child process bounded by the timeout (the serving process imports no TensorFlow for a
model it serves as ONNX), and, when the gate passes, served as ONNX. The converted graph and
its report are cached under ``<download cache dir>/optimized/<key>/``, keyed by the content of the
source's files, the samples, the plan and the converters' versions: the next load of the
same version (another process, a restart) takes it without converting or checking again.
When conversion fails or the gate refuses, the source is served; the note returned says
why, and becomes the version's status reason.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from keepwarm.errors import KeepwarmError, ModelLoadError
from keepwarm.optimize.child import OptimizeRequest
from keepwarm.optimize.convert import run_optimize
from keepwarm.optimize.report import Gate
from keepwarm.runtimes.base import LoadedModel
from keepwarm.runtimes.registry import get_runtime

CONVERTED = ("savedmodel", "keras")
REPORT = "report.json"
GRAPH = "model.onnx"
_TOOLS = ("keepwarm", "tensorflow", "tf2onnx", "onnx", "onnxruntime", "onnxconverter-common")
_GATE_KEYS = ("max_abs_diff", "min_agreement", "max_accuracy_drop")


def load_optimized(
    path: Path,
    source_format: str,
    signature: str | None,
    plan: Mapping[str, Any],
    samples: Path | None,
    load_source: Callable[[], LoadedModel],
    timeout: float,
    cache_dir: Path,
    options: Mapping[str, Any],
) -> tuple[LoadedModel, str]:
    """The model to serve for the version at ``path`` and a note saying what is served.
    ``options`` (model.toml's ``[options]``) go to the ONNX runtime too, which reads its
    own keys (``intra_op_num_threads``, ...) and ignores the others."""
    if source_format not in CONVERTED:
        note = f"optimize: {source_format} models are not converted; serving it as it is"
        return load_source(), note
    quantize = plan.get("quantize")
    what = "ONNX" + (f" + {quantize}" if quantize else "")
    try:
        entry, cached = _converted(path, signature, plan, samples, timeout, cache_dir)
        report = json.loads((entry / REPORT).read_text())
    except (KeepwarmError, OSError, ValueError) as exc:
        why = exc.message if isinstance(exc, KeepwarmError) else f"{type(exc).__name__}: {exc}"
        return load_source(), f"optimize: {why}; serving the {source_format} source"
    if not report["passed"]:
        failed = "; ".join(report["failures"])
        note = f"optimize: the gate refused the {what} graph: {failed}"
        return load_source(), f"{note}; serving the {source_format} source"
    try:
        model = get_runtime("onnx").load(entry / GRAPH, signature=None, options=options)
    except KeepwarmError as exc:  # a bad option for ONNX Runtime, a damaged cache entry
        note = f"optimize: the converted graph does not load: {exc.message}"
        return load_source(), f"{note}; serving the {source_format} source"
    agreement = [o["top1_agreement"] for o in report["outputs"] if o["top1_agreement"] is not None]
    worst = max((o["max_abs_diff"] for o in report["outputs"]), default=0.0)
    measured = f"max |diff| {worst:.3g}" + (
        f", top-1 agreement {min(agreement):.2%}" if agreement else ""
    )
    how = "cached" if cached else f"converted in {report['convert_seconds']:.1f} s"
    checked = f"{measured} on {report['samples']} samples"
    return model, f"serving the {what} graph converted from the {source_format} ({how}; {checked})"


def _converted(
    path: Path,
    signature: str | None,
    plan: Mapping[str, Any],
    samples: Path | None,
    timeout: float,
    cache_dir: Path,
) -> tuple[Path, bool]:
    """The cache entry (graph and report) for this source and plan; True when it existed."""
    root = cache_dir / "optimized"
    what = {**{k: v for k, v in plan.items() if k != "timeout"}, "signature": signature}
    key = _key(path, what, samples)
    entry = root / key
    if (entry / REPORT).is_file():
        return entry, True
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".tmp-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        default = Gate.default(plan.get("quantize"))
        gate = {k: plan[k] if plan.get(k) is not None else getattr(default, k) for k in _GATE_KEYS}
        request = OptimizeRequest(
            source=str(path),
            signature=signature,
            quantize=plan.get("quantize"),
            samples=None if samples is None else str(samples),
            gate=gate,
            output=str(staging / GRAPH),
            report=str(staging / REPORT),
            result=str(staging / "result.json"),
        )
        run_optimize(request, timeout)  # converts and checks: no TensorFlow here
        if _key(path, what, samples) != key:  # its entry would be another content's graph
            raise ModelLoadError(
                f"the files of {path} changed while it was converted (a version must not be "
                "written in place); the graph is not kept"
            )
        try:
            staging.rename(entry)
        except OSError:
            if not (entry / REPORT).is_file():  # not another loader's entry: a real error
                raise
        return entry, False
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _key(path: Path, plan: Mapping[str, Any], samples: Path | None) -> str:
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(f"{file.relative_to(path) if file != path else file.name}\n".encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    if samples is not None and samples.is_file():
        digest.update(b"samples\n" + samples.read_bytes())
    digest.update(json.dumps(dict(plan), sort_keys=True).encode())
    for tool in _TOOLS:
        try:
            digest.update(f"{tool}={metadata.version(tool)}\n".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{tool}=missing\n".encode())
    return digest.hexdigest()
