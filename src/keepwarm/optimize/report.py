"""The agreement report of an optimized model, and the gate that judges it.

Every figure is measured on the samples in one run: sizes (weights as keepwarm's budget
counts them, and files on disk), median latency at batch 1 and batch 32 (source and
result timed alternately), per output the max and mean absolute difference and the
top-1 agreement (outputs with a class axis), and accuracy when labels are given.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from keepwarm.errors import InvalidInputError

# The default gate: an unquantized conversion must give the same answers to float
# rounding; a quantized one must keep the same top-1 answer on 99% of the samples.
UNQUANTIZED_MAX_ABS_DIFF = 1e-4
QUANTIZED_MIN_AGREEMENT = 0.99


@dataclass(frozen=True)
class Gate:
    """Limits a result must meet to be published; None means "not checked".
    ``max_accuracy_drop`` is in percentage points (needs labels)."""

    max_abs_diff: float | None = None
    min_agreement: float | None = None
    max_accuracy_drop: float | None = None

    def __post_init__(self) -> None:
        """A limit no result could meet (NaN, a negative difference, an agreement above
        1) is refused here, before minutes of conversion end in a failed gate."""
        bounds = {
            "max_abs_diff": (0.0, math.inf, "a number >= 0"),
            "min_agreement": (0.0, 1.0, "a share from 0 to 1"),
            "max_accuracy_drop": (-math.inf, math.inf, "a number of points"),
        }
        for name, (low, high, expected) in bounds.items():
            value = getattr(self, name)
            if value is None:
                continue
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or math.isnan(value) or not low <= value <= high:
                flag = "--" + name.replace("_", "-")
                raise InvalidInputError(f"{flag} {value!r}: expected {expected}")

    @classmethod
    def default(cls, quantize: str | None) -> Gate:
        if quantize is None:
            return cls(max_abs_diff=UNQUANTIZED_MAX_ABS_DIFF)
        return cls(min_agreement=QUANTIZED_MIN_AGREEMENT)

    def failures(self, report: Report) -> list[str]:
        """One sentence per failed limit, naming it, the limit and the measured value."""
        failed = []
        if self.max_abs_diff is not None:
            for out in report.outputs:
                if not out.max_abs_diff <= self.max_abs_diff:
                    failed.append(
                        f"--max-abs-diff: output {out.name!r} differs by up to "
                        f"{out.max_abs_diff:.3g}, over the limit {self.max_abs_diff:g}"
                    )
        if self.min_agreement is not None:
            for out in report.outputs:
                if out.top1_agreement is None:
                    continue
                if not out.top1_agreement >= self.min_agreement:
                    failed.append(
                        f"--min-agreement: output {out.name!r} keeps its top-1 answer on "
                        f"{out.top1_agreement:.2%} of the samples, under the limit "
                        f"{self.min_agreement:.2%}"
                    )
        if self.max_accuracy_drop is not None:
            drop = report.accuracy_drop
            if drop is None:
                failed.append("--max-accuracy-drop: no labels were given, accuracy is unknown")
            elif not drop <= self.max_accuracy_drop:
                failed.append(
                    f"--max-accuracy-drop: accuracy fell by {drop:.2f} points, over the "
                    f"limit {self.max_accuracy_drop:g}"
                )
        return failed


@dataclass(frozen=True)
class OutputChange:
    name: str
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float | None  # None: the output has no class axis


@dataclass(frozen=True)
class Latency:
    batch: int
    source_ms: float  # medians of the same run
    result_ms: float

    @property
    def speedup(self) -> float:
        return self.source_ms / self.result_ms if self.result_ms > 0 else float("inf")


@dataclass(frozen=True)
class Side:
    """One of the two models compared."""

    path: str
    format: str
    nbytes: int  # weights, as keepwarm's memory budget counts them
    nbytes_source: str  # "framework" or "files"
    file_bytes: int  # the model's files on disk


@dataclass(frozen=True)
class Report:
    source: Side
    result: Side
    to: str
    quantize: str | None
    samples: int
    samples_origin: str
    outputs: tuple[OutputChange, ...]
    latency: tuple[Latency, ...]
    accuracy_source: float | None = None  # fractions in [0, 1]
    accuracy_result: float | None = None
    convert_seconds: float = 0.0
    gate: Gate = field(default_factory=Gate)
    failures: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def size_ratio(self) -> float:
        """Weights of the result over the source's (files may hold other things)."""
        return self.result.nbytes / self.source.nbytes if self.source.nbytes else 0.0

    @property
    def accuracy_drop(self) -> float | None:
        """Points of accuracy lost (negative: gained), or None without labels."""
        if self.accuracy_source is None or self.accuracy_result is None:
            return None
        return 100.0 * (self.accuracy_source - self.accuracy_result)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        data["size_ratio"] = self.size_ratio
        data["accuracy_drop_points"] = self.accuracy_drop
        for entry, latency in zip(data["latency"], self.latency, strict=True):
            entry["speedup"] = latency.speedup
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def format(self) -> str:
        """The report as a few aligned lines of text."""
        what = self.to + (f" + {self.quantize}" if self.quantize else "")
        lines = [
            f"source   {self.source.format:<16} {self.source.path}",
            f"result   {what:<16} {self.result.path}  (converted in {self.convert_seconds:.1f} s)",
            f"checked  on {self.samples} rows: {self.samples_origin}",
            "",
            f"{'':<22}{'source':>12}{'result':>12}{'ratio':>9}",
            _row("weights (bytes)", self.source.nbytes, self.result.nbytes),
            _row("files (bytes)", self.source.file_bytes, self.result.file_bytes),
        ]
        for latency in self.latency:
            lines.append(
                f"{f'latency batch {latency.batch} (ms)':<22}{latency.source_ms:>12.3f}"
                f"{latency.result_ms:>12.3f}{1 / latency.speedup:>8.2f}x"
            )
        if self.accuracy_source is not None and self.accuracy_result is not None:
            lines.append(
                f"{'accuracy':<22}{self.accuracy_source:>12.2%}{self.accuracy_result:>12.2%}"
                f"   drop {self.accuracy_drop:.2f} points"
            )
        lines += ["", f"{'output':<22}{'max |diff|':>12}{'mean |diff|':>12}{'top-1 same':>12}"]
        for out in self.outputs:
            agree = "-" if out.top1_agreement is None else f"{out.top1_agreement:.2%}"
            lines.append(
                f"{out.name:<22}{out.max_abs_diff:>12.3g}{out.mean_abs_diff:>12.3g}{agree:>12}"
            )
        limits = ", ".join(f"{k}={v:g}" for k, v in asdict(self.gate).items() if v is not None)
        verdict = "passed" if self.passed else "FAILED: " + "; ".join(self.failures)
        lines += ["", f"gate     {limits or 'no limits'}: {verdict}"]
        return "\n".join(lines)


def _row(label: str, source: int, result: int) -> str:
    ratio = f"{result / source:.2f}x" if source else "-"
    return f"{label:<22}{source:>12,}{result:>12,}{ratio:>9}"
