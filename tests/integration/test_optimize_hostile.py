"""``keepwarm optimize`` given what a careless or hostile user gives: models whose inputs
are not what generated samples assume (a fixed batch size, a scalar), a source that fails
on its samples, samples whose answers are NaN, labels that name no class, timeouts that
are no number of seconds. Each ends in an answer or in one error naming what was wrong,
never in a framework's traceback. Real SavedModels, built here; conversions in a child."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from keepwarm.cli import main
from keepwarm.errors import InvalidInputError
from keepwarm.optimize import Gate, optimize
from support.optimize_models import tf_function_model
from support.waiting import process_alive, wait_until

WAIT_S = 120.0


def test_a_model_with_a_fixed_batch_size_is_checked_on_that_many_rows(tmp_path: Path) -> None:
    """Generated samples came in requests of 32 rows: the source's TensorFlow took them,
    the converted graph refused them (ONNX Runtime's InvalidArgument, a traceback)."""
    source = tf_function_model(tmp_path / "m" / "1", [("x", (64, 3), "float32")], '{"y": x * 2}')
    report = optimize(source, output=tmp_path / "m.onnx", runs=1).report
    assert report.passed, report.failures
    assert report.samples == 64 and report.outputs[0].max_abs_diff == 0.0


def test_a_scalar_input_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Was ``TypeError: len() of unsized object`` and exit 1."""
    source = tf_function_model(tmp_path / "m" / "1", [("t", (), "float32")], '{"y": t * 2}')
    assert main(["optimize", str(source), "--runs", "1"]) == 2
    err = capsys.readouterr().err
    assert "error: input 't' is a scalar (shape [])" in err and "Traceback" not in err


def test_a_source_that_fails_on_its_samples_is_named(tmp_path: Path) -> None:
    """The source's own error (here an assertion the generated inputs break) is said as
    the source's, with the samples' origin, not a traceback out of the check."""
    fn = '{"y": tf.identity(x) if tf.debugging.assert_less(x, -1.0) is None else x}'
    source = tf_function_model(tmp_path / "m" / "1", [("x", (None, 4), "float32")], fn)
    with pytest.raises(InvalidInputError, match=r"^the source model fails on the samples \(64 "):
        optimize(source, runs=1)


def test_nan_answers_both_models_give_are_no_difference(
    example_models: Path, tmp_path: Path
) -> None:
    """Samples holding NaN make both models answer NaN: the gate failed with "differs by
    up to nan" though the converted graph answers exactly as its source."""
    x = np.random.default_rng(0).random((8, 784), dtype=np.float32)
    x[3, 5] = np.nan
    np.savez(tmp_path / "nan.npz", image=x)
    report = optimize(example_models / "mlp_onnx", calibration=tmp_path / "nan.npz", runs=1).report
    assert report.passed, report.failures
    (probs,) = report.outputs
    assert probs.max_abs_diff <= 1e-4 and probs.mean_abs_diff <= 1e-4


def test_labels_that_name_no_class_are_refused(example_models: Path, tmp_path: Path) -> None:
    """Labels -1 (or past the classes) scored 0% on both sides: accuracy reported, a drop
    of 0 points, the gate passed, on labels that meant nothing."""
    x = np.random.default_rng(0).random((8, 784), dtype=np.float32)
    for bad in (-1, 10):
        np.savez(tmp_path / "l.npz", image=x, labels=np.full(8, bad))
        with pytest.raises(InvalidInputError, match=f"from {bad} to {bad}; output 'probs' has 10"):
            optimize(example_models / "mlp_onnx", calibration=tmp_path / "l.npz", runs=1)


def test_timeouts_that_are_no_number_of_seconds(
    example_models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--timeout inf was subprocess's OverflowError (exit 1); 1e300 overflowed too."""
    model = str(example_models / "mlp_onnx")
    assert main(["optimize", model, "--timeout", "inf"]) == 2
    assert "error: timeout: expected a finite number of seconds > 0, got inf" in (
        capsys.readouterr().err
    )
    assert main(["optimize", model, "--timeout", "1e300", "--runs", "1"]) == 0


def test_an_output_that_is_the_source_model_is_refused(
    example_models: Path, tmp_path: Path
) -> None:
    """``-o`` naming the source's own file rewrote the model in place (a version a
    repository serves changed under it, copied over non-atomically)."""
    model = tmp_path / "m"
    shutil.copytree(example_models / "mlp_onnx", model)
    graph = model / "1" / "model.onnx"
    before = graph.read_bytes()
    for target in (graph, model / "1" / "other.onnx"):
        with pytest.raises(InvalidInputError, match=f"output {target}: is .*the source model"):
            optimize(model, quantize="dynamic", output=target, runs=1)
    assert graph.read_bytes() == before
    assert sorted(p.name for p in (model / "1").iterdir()) == ["model.onnx"]


def test_an_output_inside_another_version_of_the_source_model_is_refused(
    example_models: Path, tmp_path: Path
) -> None:
    """Once ``m/2`` (the highest version) was the source, ``-o m/1/x.onnx`` was written
    into version 1, a version a repository may serve."""
    model = tmp_path / "m"
    shutil.copytree(example_models / "mlp_onnx", model)
    shutil.copytree(model / "1", model / "2")
    for target in (model / "1" / "x.onnx", model / "x.onnx"):
        with pytest.raises(InvalidInputError, match=f"output {target}: is inside the source"):
            optimize(model, output=target, runs=1)
    assert sorted(p.name for p in model.rglob("*.onnx")) == ["model.onnx", "model.onnx"]


def test_an_accuracy_limit_without_labels_is_refused_before_converting(
    example_models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The gate could only fail (no labels, no accuracy): it did, after the conversion
    (minutes for a large SavedModel), with the report printed above the error."""
    with pytest.raises(InvalidInputError, match=r"--max-accuracy-drop needs labels; the samp"):
        optimize(example_models / "mlp_onnx", gate=Gate(max_accuracy_drop=1.0), runs=1)
    assert main(["optimize", str(example_models / "mlp_onnx"), "--max-accuracy-drop", "1"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: --max-accuracy-drop needs labels"), err


def test_an_existing_output_is_replaced_whole(example_models: Path, tmp_path: Path) -> None:
    target = tmp_path / "out.onnx"
    target.write_bytes(b"old")
    optimize(example_models / "mlp_onnx", output=target, runs=1)
    assert target.read_bytes()[:2] != b"ol" and target.stat().st_size > 1000
    assert [p.name for p in tmp_path.iterdir()] == ["out.onnx"]  # no temporary file left


def test_a_number_of_runs_past_the_bound_is_refused_first(tmp_path: Path) -> None:
    """--runs 1000000000 was taken: days of timed calls after the conversion. Refused
    before the source is looked for (here it does not exist)."""
    with pytest.raises(InvalidInputError, match=r"runs: expected an integer from 1 to 10000"):
        optimize(tmp_path / "nothing", runs=10**9)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_command_leaves_no_conversion_running(
    example_models: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    """SIGTERM (or SIGKILL) to ``keepwarm optimize`` while its child converted: the child
    ran on for no one and the temporary directory stayed. SIGTERM now ends the command
    through its cleanups (exit 143, "terminated"); the child dies with its parent."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {**os.environ, "TMPDIR": str(temporary), "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "keepwarm", "optimize", str(example_models / "mlp")]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert wait_until(lambda: _children(proc.pid) or proc.poll() is not None)
        (child,) = _children(proc.pid)
        proc.send_signal(sig)
        err = proc.communicate(timeout=WAIT_S)[1]
        assert wait_until(lambda: not process_alive(child)), "the conversion ran on"
        # it was stopped in its work, not left to finish it (its result is written last)
        assert list(temporary.rglob("result.json")) == [], "the conversion ran on"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if sig == signal.SIGTERM:
        assert proc.returncode == 143 and err.rstrip().endswith("terminated"), err
        assert list(temporary.iterdir()) == []
