"""The gate names each failed limit with the measured value; the report's text and JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from keepwarm.errors import InvalidInputError
from keepwarm.optimize.report import Gate, Latency, OutputChange, Report, Side


def _report(
    *outputs: OutputChange, accuracy: tuple[float | None, float | None] = (None, None)
) -> Report:
    return Report(
        source=Side("src", "savedmodel", 4000, "framework", 9000),
        result=Side("model.onnx", "onnx", 1000, "framework", 1200),
        to="onnx",
        quantize="dynamic",
        samples=10,
        samples_origin="test",
        outputs=outputs,
        latency=(Latency(1, 2.0, 0.5), Latency(32, 8.0, 4.0)),
        accuracy_source=accuracy[0],
        accuracy_result=accuracy[1],
    )


def test_default_gate_depends_on_quantization() -> None:
    assert Gate.default(None) == Gate(max_abs_diff=1e-4)
    assert Gate.default("float16") == Gate(min_agreement=0.99)


def test_each_failed_limit_is_named_with_the_measured_value() -> None:
    report = _report(
        OutputChange("probs", 0.03, 0.001, 0.95),
        OutputChange("embedding", 0.5, 0.1, None),
        accuracy=(0.97, 0.94),
    )
    failures = Gate(max_abs_diff=0.04, min_agreement=0.99, max_accuracy_drop=1.0).failures(report)
    assert len(failures) == 3
    assert failures[0].startswith("--max-abs-diff: output 'embedding'") and "0.5" in failures[0]
    assert failures[1].startswith("--min-agreement: output 'probs'") and "95.00%" in failures[1]
    assert failures[2].startswith("--max-accuracy-drop") and "3.00 points" in failures[2]


def test_limits_met_exactly_pass_and_nan_fails() -> None:
    report = _report(OutputChange("probs", 0.01, 0.001, 0.99), accuracy=(0.97, 0.96))
    assert (
        Gate(max_abs_diff=0.01, min_agreement=0.99, max_accuracy_drop=1.0001).failures(report) == []
    )
    broken = _report(OutputChange("probs", float("nan"), float("nan"), 1.0))
    assert Gate(max_abs_diff=1.0).failures(broken)  # NaN answers never pass


def test_accuracy_limit_without_labels_fails() -> None:
    (failure,) = Gate(max_accuracy_drop=1.0).failures(_report(OutputChange("p", 0, 0, 1.0)))
    assert "no labels" in failure


def test_figures_derived_from_the_measurements() -> None:
    report = _report(OutputChange("probs", 0.03, 0.001, 1.0), accuracy=(0.97, 0.96))
    assert report.size_ratio == 0.25
    assert report.latency[0].speedup == 4.0
    assert abs(report.accuracy_drop - 1.0) < 1e-9  # type: ignore[operator]
    data = json.loads(report.to_json())
    assert data["passed"] is True and data["latency"][1]["speedup"] == 2.0
    text = report.format()
    assert "latency batch 32 (ms)" in text and "drop 1.00 points" in text


@pytest.mark.parametrize(
    "limit",
    [{"max_abs_diff": float("nan")}, {"max_abs_diff": -1.0}, {"min_agreement": 1.5},
     {"min_agreement": float("nan")}, {"max_accuracy_drop": float("nan")}, {"max_abs_diff": "1"}],
)  # fmt: skip
def test_a_limit_that_no_result_could_meet_is_refused_up_front(limit: dict[str, Any]) -> None:
    # ``--max-abs-diff nan`` used to convert for minutes, then fail "over the limit nan"
    name = next(iter(limit))
    with pytest.raises(InvalidInputError, match=f"--{name.replace('_', '-')}"):
        Gate(**limit)


def test_the_command_refuses_a_bad_limit_before_converting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from keepwarm.cli import main

    # the source does not exist: a limit checked first is the error said
    code = main(["optimize", str(tmp_path / "absent"), "--max-abs-diff", "nan"])
    assert code == 2
    assert capsys.readouterr().err.startswith("error: --max-abs-diff nan: expected ")
