"""``keepwarm optimize`` on real models: the example MLP, the trained digits model, and a
model built to be ruined by int8 quantization. Each conversion runs in a child process
(TensorFlow and tf2onnx), a few seconds each."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import keepwarm
from keepwarm.cli import main
from keepwarm.errors import (
    ConversionError,
    DeadlineExceededError,
    GateError,
    InvalidInputError,
)
from keepwarm.examples import DIGITS_TEST, LABELS
from keepwarm.optimize import Gate, optimize
from keepwarm.optimize.child import ConversionRequest
from keepwarm.optimize.convert import run_conversion
from keepwarm.optimize.publish import GRAPH, REPORT
from keepwarm.sources.filesystem import MARKER
from support.optimize_models import sensitive_model

WAIT_S = 120.0


def _digits(example_models: Path) -> tuple[Path, Path]:
    version = example_models / "digits" / "1"
    return version, version / DIGITS_TEST


def _run_both(source: Path, graph: Path, inputs: np.ndarray) -> tuple[np.ndarray, ...]:
    """The source's and the ONNX graph's answers, computed here, apart from the report, in
    batches of 32 rows as the report's are (dynamic int8 scales each batch on its own)."""
    import onnxruntime as ort

    batches = [{"image": inputs[i : i + 32]} for i in range(0, len(inputs), 32)]
    cache = keepwarm.ModelCache()
    try:
        model = cache.load(source)
        expected = np.concatenate([model.predict(b)["probs"] for b in batches])
    finally:
        cache.close()
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    got = np.concatenate([session.run(["probs"], b)[0] for b in batches])
    return expected, got


@pytest.mark.parametrize("quantize", [None, "dynamic", "float16", "static"])
def test_digits_agree_within_tolerance_and_the_report_is_measured(
    example_models: Path, tmp_path: Path, quantize: str | None
) -> None:
    source, test_split = _digits(example_models)
    graph = tmp_path / "digits.onnx"
    result = optimize(
        source.parent, quantize=quantize, calibration=test_split, output=graph, runs=5
    )
    report = result.report
    assert report.passed, report.failures
    assert report.gate == Gate.default(quantize)
    with np.load(test_split) as data:
        images, labels = data["image"], data[LABELS]
    expected, got = _run_both(source, graph, images)
    (probs,) = report.outputs
    diff = np.abs(expected.astype(np.float64) - got.astype(np.float64))
    assert probs.max_abs_diff == pytest.approx(diff.max(), rel=1e-6, abs=1e-12)
    assert probs.mean_abs_diff == pytest.approx(diff.mean(), rel=1e-6, abs=1e-12)
    assert probs.top1_agreement == np.mean(expected.argmax(1) == got.argmax(1))
    assert report.accuracy_source == np.mean(expected.argmax(1) == labels)
    assert report.accuracy_result == np.mean(got.argmax(1) == labels)
    assert report.samples == len(labels) == 360
    assert report.result.file_bytes == graph.stat().st_size
    assert [lat.batch for lat in report.latency] == [1, 32]
    assert all(lat.source_ms > 0 and lat.result_ms > 0 for lat in report.latency)
    # The documented tolerances.
    if quantize is None:
        assert probs.max_abs_diff <= 1e-4
        assert report.result.nbytes == report.source.nbytes  # the same float32 weights
    else:
        assert probs.top1_agreement >= 0.99
        assert report.accuracy_drop is not None and report.accuracy_drop <= 1.0
        limit = 0.55 if quantize == "float16" else 0.30  # float16: 1/2, int8: 1/4 (+ scales)
        assert report.size_ratio <= limit


@pytest.mark.parametrize(("name", "quantize"), [("mlp_keras", None), ("mlp", "float16")])
def test_example_mlp_converts_from_savedmodel_and_keras(
    example_models: Path, tmp_path: Path, name: str, quantize: str | None
) -> None:
    graph = tmp_path / "mlp.onnx"
    report = optimize(example_models / name, quantize=quantize, output=graph, runs=3).report
    assert report.passed, report.failures
    assert report.samples_origin.startswith("64 generated rows")
    x = np.random.default_rng(1).random((8, 784), dtype=np.float32)
    expected, got = _run_both(example_models / name, graph, x)
    tolerance = 1e-4 if quantize is None else 1e-2
    np.testing.assert_allclose(got, expected, rtol=0, atol=tolerance)


def test_a_tf_hub_handle_converts(example_hub_tarball: Path, tmp_path: Path) -> None:
    from support.http_server import serve

    with serve() as server:
        handle = server.add("/models/mlp.tar.gz", example_hub_tarball.read_bytes())
        report = optimize(handle, output=tmp_path / "mlp.onnx", runs=2).report
    assert report.passed, report.failures
    assert report.source.path == handle and report.source.format == "savedmodel"
    assert report.outputs[0].name == "probs" and report.outputs[0].max_abs_diff <= 1e-4


def test_gate_refuses_a_quantization_that_changes_answers_and_publishes_nothing(
    tmp_path: Path,
) -> None:
    model_dir = tmp_path / "repo" / "sensitive"
    source = sensitive_model(model_dir / "1")
    x = np.random.default_rng(2).random((200, 16), dtype=np.float32)
    x[:, 15] = 0.0
    np.savez(tmp_path / "samples.npz", x=x)
    before = sorted(p.name for p in model_dir.iterdir())
    with pytest.raises(GateError) as caught:
        optimize(
            source,
            quantize="dynamic",
            calibration=tmp_path / "samples.npz",
            publish_to=model_dir,
            runs=2,
        )
    message = caught.value.message
    assert message.startswith(f"not published to {model_dir}: --min-agreement: output 'scores'")
    assert caught.value.report.outputs[0].top1_agreement < 0.5
    assert sorted(p.name for p in model_dir.iterdir()) == before == ["1"]


def test_cli_prints_the_report_and_names_the_failed_limit(
    example_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, test_split = _digits(example_models)
    repo = tmp_path / "repo"
    shutil.copytree(source, repo / "digits" / "1")
    args = ["optimize", str(repo / "digits"), "--quantize", "dynamic", "--json"]
    args += ["--calibration", str(test_split), "--publish", str(repo / "digits")]
    args += ["--max-abs-diff", "1e-9", "--max-accuracy-drop", "1", "--runs", "2"]
    assert main(args) == 2
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["passed"] is False and report["quantize"] == "dynamic"
    # the limits given replace the default gate's one by one; the default one stays
    assert report["gate"] == {"max_abs_diff": 1e-9, "min_agreement": 0.99, "max_accuracy_drop": 1}
    assert report["accuracy_drop_points"] <= 1.0
    assert err.startswith("error: not published to ")
    assert "--max-abs-diff: output 'probs' differs by up to" in err
    assert "--max-accuracy-drop" not in err  # that limit held
    assert sorted(p.name for p in (repo / "digits").iterdir()) == ["1"]


def test_publish_under_load_swaps_with_no_failed_request(
    example_models: Path, tmp_path: Path
) -> None:
    source, test_split = _digits(example_models)
    root = tmp_path / "repo"
    shutil.copytree(source, root / "digits" / "1")
    with np.load(test_split) as data:
        images = data["image"][:8]
    served: list[int] = []
    failures: list[BaseException] = []
    seen_two = threading.Event()
    stop = threading.Event()

    def traffic(repo: keepwarm.Repository) -> None:
        deadline = time.monotonic() + 2 * WAIT_S
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                with repo.lease("digits", timeout=WAIT_S) as model:
                    probs = model.predict({"image": images})["probs"]
                    version = model.version
                assert probs.shape == (8, 10), probs.shape
                np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-3)
            except BaseException as exc:
                failures.append(exc)
                continue
            if not served or served[-1] != version:
                served.append(version)
            if version == 2:
                seen_two.set()

    with keepwarm.Repository(root, poll_seconds=0.1) as repo:
        assert repo.wait_ready("digits", timeout=WAIT_S) == 1
        thread = threading.Thread(target=traffic, args=(repo,))
        thread.start()
        try:
            result = optimize(
                root / "digits" / "1",
                quantize="dynamic",
                calibration=test_split,
                publish_to=root / "digits",
                runs=2,
            )
            assert result.published == 2
            assert seen_two.wait(WAIT_S)
        finally:
            stop.set()
            thread.join(WAIT_S)
    assert failures == []
    assert served == [1, 2]
    version = root / "digits" / "2"
    assert sorted(p.name for p in version.iterdir()) == sorted([GRAPH, REPORT, MARKER])
    stored = json.loads((version / REPORT).read_text())
    assert stored["passed"] is True and stored["quantize"] == "dynamic"
    assert result.report.result.path == str(version / GRAPH)


def test_conversion_is_stopped_at_its_timeout(example_models: Path) -> None:
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError, match=r"did not finish within 0\.5 s"):
        optimize(example_models / "mlp", timeout=0.5)
    assert time.monotonic() - started < 30  # the source loads here; the child is killed


def test_a_failing_conversion_reports_the_childs_error(tmp_path: Path) -> None:
    request = ConversionRequest(
        source=str(tmp_path / "gone"),
        runtime="savedmodel",
        signature=None,
        output=str(tmp_path / "model.onnx"),
        quantize=None,
        calibration=None,
        result=str(tmp_path / "result.json"),
    )
    with pytest.raises(ConversionError, match=r"ModelLoadError: no SavedModel .* in .*gone"):
        run_conversion(request, timeout=60)


def test_an_output_that_cannot_be_written_is_refused_before_converting(
    example_models: Path, tmp_path: Path
) -> None:
    target = tmp_path / "missing" / "model.onnx"  # was a FileNotFoundError after the work
    with pytest.raises(InvalidInputError, match=f"output {target}: "):
        optimize(example_models / "mlp_onnx", output=target)
    with pytest.raises(InvalidInputError, match=f"output {tmp_path}: "):
        optimize(example_models / "mlp_onnx", output=tmp_path)  # a directory


def test_bad_requests_are_refused_before_converting(example_models: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="--quantize 'int4'"):
        optimize(example_models / "mlp", quantize="int4")
    with pytest.raises(InvalidInputError, match="--to 'tflite'"):
        optimize(example_models / "mlp", to="tflite")
    with pytest.raises(InvalidInputError, match="--quantize static calibrates on real inputs"):
        optimize(example_models / "mlp", quantize="static")
    pickled = tmp_path / "model.pkl"
    pickled.write_bytes(b"\x80\x04N.")
    with pytest.raises(InvalidInputError, match="is a pickle model"):
        optimize(pickled)
    with pytest.raises(keepwarm.ModelNotFoundError):
        optimize(example_models / "mlp", version=7)
    for bad in ({"runs": "5"}, {"runs": 0}, {"timeout": "60"}, {"timeout": float("nan")}):
        with pytest.raises(InvalidInputError, match=next(iter(bad))):
            optimize(example_models / "mlp", **bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"expected a keepwarm\.optimize\.Gate"):
        optimize(example_models / "mlp", gate={"max_abs_diff": 1})  # type: ignore[arg-type]
    assert not os.path.exists(tmp_path / "model.onnx")
