"""``keepwarm.optimize.optimize``: convert, quantize, check, and (when it passes) publish."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from keepwarm.config_optimize import OPTIMIZE_TARGETS
from keepwarm.errors import GateError, InvalidInputError
from keepwarm.loading import select_version
from keepwarm.optimize import check, publish
from keepwarm.optimize.child import ConversionRequest, convert, save_calibration
from keepwarm.optimize.convert import run_conversion
from keepwarm.optimize.graph import QUANTIZE_MODES
from keepwarm.optimize.report import Gate, Report
from keepwarm.optimize.samples import Samples, from_file, generated, warmup_samples
from keepwarm.runtimes.base import LoadedModel
from keepwarm.runtimes.registry import detect_runtime, get_runtime
from keepwarm.settings import DownloadSettings, LoadingSettings
from keepwarm.sources.resolve import resolve_uri

TARGETS = OPTIMIZE_TARGETS
CONVERTIBLE = ("savedmodel", "keras", "onnx")
DEFAULT_TIMEOUT = LoadingSettings.load_timeout  # seconds
DEFAULT_RUNS = 30
#: Timed calls per batch size and model at most: MobileNetV2 takes about 30 ms a call at
#: batch 32 here, so 10,000 runs time for about 20 minutes; --runs 1000000000 ran for days.
MAX_RUNS = 10_000


@dataclass(frozen=True)
class OptimizeResult:
    report: Report
    output: Path | None  # where the model was written (``output=``), if anywhere
    published: int | None  # the version published (``publish=``), if any


def optimize(
    source: str | os.PathLike[str],
    *,
    to: str = "onnx",
    quantize: str | None = None,
    calibration: str | os.PathLike[str] | None = None,
    gate: Gate | None = None,
    publish_to: str | os.PathLike[str] | None = None,
    output: str | os.PathLike[str] | None = None,
    version: int | None = None,
    signature: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    runs: int = DEFAULT_RUNS,
    convert_here: bool = False,
    downloads: DownloadSettings | None = None,
) -> OptimizeResult:
    """Convert ``source`` (a SavedModel, a ``.keras`` file, a TF Hub handle, an ONNX file,
    or a versioned model directory: its highest version unless ``version``) to ONNX with
    ONNX Runtime's graph optimisations, optionally quantize it (``"dynamic"`` int8,
    ``"float16"``, ``"static"`` int8 calibrated on the samples), and check it against the
    source on samples: ``calibration`` (a file), else the model's warmup samples, else
    generated inputs. ``gate`` (default ``Gate.default(quantize)``) judges the report.

    ``output`` receives the model whatever the verdict. ``publish_to`` (a model directory
    in a repository) receives it as the next version, with the report, only when the gate
    passes; otherwise ``GateError`` names the failed limits and nothing is published.
    Conversion runs in a child process, stopped after ``timeout`` seconds (in this process
    with ``convert_here``: for a caller that is itself such a child). ``downloads``
    (``Settings.downloads``; the environment's when None) is where a handle is fetched."""
    if to not in TARGETS:
        raise InvalidInputError(f"--to {to!r}: expected one of {', '.join(TARGETS)}")
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise InvalidInputError(
            f"--quantize {quantize!r}: expected one of {', '.join(QUANTIZE_MODES)}"
        )
    seconds_given = isinstance(timeout, int | float) and not isinstance(timeout, bool)
    if not seconds_given or not 0 < timeout < math.inf:  # inf: an OverflowError in subprocess
        raise InvalidInputError(
            f"timeout: expected a finite number of seconds > 0, got {timeout!r}"
        )
    if isinstance(runs, bool) or not isinstance(runs, int) or not 1 <= runs <= MAX_RUNS:
        raise InvalidInputError(f"runs: expected an integer from 1 to {MAX_RUNS}, got {runs!r}")
    if gate is not None and not isinstance(gate, Gate):
        raise InvalidInputError(f"gate: expected a keepwarm.optimize.Gate, got {gate!r}")
    if output is not None:
        _check_output(Path(output))
    resolved = resolve_uri(os.fspath(source), downloads=downloads)
    path = select_version(resolved, version)
    if output is not None:
        _check_not_source(Path(output), path)
        if resolved.is_dir() and path.parent == resolved:  # a model directory's version
            _check_not_source(Path(output), resolved)
    runtime = detect_runtime(path).name
    if runtime not in CONVERTIBLE:
        raise InvalidInputError(
            f"{path} is a {runtime} model; keepwarm optimize converts a SavedModel, a .keras "
            "file, a TF Hub handle or an ONNX model"
        )
    extra = [] if publish_to is None else publish.check_target(Path(publish_to), path)
    source_model = get_runtime(runtime).load(path, signature=signature, options={})
    try:
        samples = _samples(path, source_model, calibration)
        if gate is not None and gate.max_accuracy_drop is not None and samples.labels is None:
            raise InvalidInputError(  # the gate could only fail, after the conversion
                f"--max-accuracy-drop needs labels; the samples ({samples.origin}) have "
                "none: pass --calibration FILE, an .npz with a 'labels' array"
            )
        if quantize == "static" and samples.generated:
            raise InvalidInputError(
                "--quantize static calibrates on real inputs: pass --calibration FILE "
                "(or give the model warmup samples)"
            )
        with tempfile.TemporaryDirectory(prefix="keepwarm-optimize-") as tmp:
            work = Path(tmp)
            graph = work / publish.GRAPH
            request = _request(path, runtime, signature, graph, quantize, samples)
            if convert_here:
                started = time.perf_counter()
                convert(request)
                seconds = time.perf_counter() - started
            else:
                seconds = run_conversion(request, timeout)
            report = _check(source_model, path, runtime, graph, samples, runs)
            where = publish.GRAPH if output is None else os.fspath(output)
            report = replace(
                report,
                source=replace(report.source, path=os.fspath(source)),
                result=replace(report.result, path=where),
                to=to,
                quantize=quantize,
                convert_seconds=seconds,
            )
            limits = gate if gate is not None else Gate.default(quantize)
            report = replace(report, gate=limits, failures=tuple(limits.failures(report)))
            written = None
            if output is not None:
                written = Path(output)
                _write(graph, written)
            if publish_to is None:
                return OptimizeResult(report, written, None)
            if not report.passed:
                raise GateError(
                    f"not published to {publish_to}: {'; '.join(report.failures)}", report
                )
            files = {publish.GRAPH: graph}
            files.update({p.relative_to(path).as_posix(): p for p in extra})
            number = publish.publish(Path(publish_to), files, report.to_json())
            final = Path(publish_to) / str(number) / publish.GRAPH
            report = replace(report, result=replace(report.result, path=str(final)))
            return OptimizeResult(report, written, number)
    finally:
        source_model.close()


def _samples(path: Path, model: LoadedModel, calibration: str | os.PathLike[str] | None) -> Samples:
    if calibration is not None:
        return from_file(Path(calibration), model.signature)
    if path.is_dir():
        found = warmup_samples(path, model.signature)
        if found is not None:
            return found
    return generated(model.signature)


def _request(
    path: Path,
    runtime: str,
    signature: str | None,
    graph: Path,
    quantize: str | None,
    samples: Samples,
) -> ConversionRequest:
    calibration = None
    if quantize == "static":
        calibration = graph.with_name("calibration.npz")
        save_calibration(calibration, list(samples.requests))
    return ConversionRequest(
        source=str(path),
        runtime=runtime,
        signature=signature,
        output=str(graph),
        quantize=quantize,
        calibration=None if calibration is None else str(calibration),
        result=str(graph.with_name("result.json")),
    )


def _check(
    source: LoadedModel, path: Path, runtime: str, graph: Path, samples: Samples, runs: int
) -> Report:
    result = get_runtime("onnx").load(graph, signature=None, options={})
    try:
        outputs, accuracy_source, accuracy_result = check.compare(source, result, samples)
        timings = check.latencies(source, result, samples, runs)
        return Report(
            source=check.side(source, path, runtime),
            result=check.side(result, graph, "onnx"),
            to="onnx",
            quantize=None,
            samples=samples.rows,
            samples_origin=samples.origin,
            outputs=outputs,
            latency=timings,
            accuracy_source=accuracy_source,
            accuracy_result=accuracy_result,
        )
    finally:
        result.close()


def _check_output(output: Path) -> None:
    """Refuse an ``output`` that cannot be written before the conversion, not after it."""
    if output.is_dir():
        raise InvalidInputError(f"output {output}: is a directory; expected a file name")
    if not output.parent.is_dir():
        raise InvalidInputError(f"output {output}: directory {output.parent} does not exist")


def _check_not_source(output: Path, source: Path) -> None:
    """Refuse an ``output`` that is the source model's file or inside its directory (and,
    for a model directory, inside any of its versions: ``-o digits/1/x.onnx`` wrote into
    a served version once ``digits/2`` was the source): the copy rewrote a model, maybe
    one a repository serves, in place."""
    target, model = output.resolve(), source.resolve()
    if target == model or model in target.parents:
        raise InvalidInputError(
            f"output {output}: is {'inside ' if target != model else ''}the source model "
            f"{source}; write it elsewhere (or --publish it as the model's next version)"
        )


def _write(graph: Path, output: Path) -> None:
    """Copy ``graph`` to ``output`` whole or not at all: an existing file there is replaced
    by a rename, never left half written by a failed copy (a full disk)."""
    temporary = output.with_name(f".{output.name}.keepwarm-{uuid.uuid4().hex[:8]}")
    try:
        shutil.copyfile(graph, temporary)
        os.replace(temporary, output)
    except OSError as exc:  # checked at the start; a permission, a full disk
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise InvalidInputError(f"output {output}: cannot be written ({exc})") from exc
