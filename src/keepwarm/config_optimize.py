"""A model's ``[optimize]`` table: the conversion target and the gate's limits, parsed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keepwarm.config_table import TomlTable

OPTIMIZE_KEYS = ("to", "quantize", "max_abs_diff", "min_agreement", "max_accuracy_drop")
OPTIMIZE_TARGETS = ("onnx",)
QUANTIZE_MODES = ("dynamic", "float16", "static")


@dataclass(frozen=True)
class OptimizeConfig:
    """``[optimize]``: what to convert a version to at load, and the gate's limits (None:
    the default gate's)."""

    to: str = "onnx"
    quantize: str | None = None
    max_abs_diff: float | None = None
    min_agreement: float | None = None
    max_accuracy_drop: float | None = None

    def to_plain(self) -> dict[str, Any]:
        """As plain data, for a load description."""
        return {name: getattr(self, name) for name in OPTIMIZE_KEYS}


def optimize_section(top: TomlTable) -> OptimizeConfig | None:
    """The ``[optimize]`` table of a model.toml's top level; None when absent."""
    if top.table.get("optimize") is None:
        return None
    table = top.table_at("optimize", OPTIMIZE_KEYS)
    to = table.text("to")
    targets = " or ".join(repr(t) for t in OPTIMIZE_TARGETS)
    if to is None:
        raise table.missing("to", f"{targets}, the runtime to convert to")
    if to not in OPTIMIZE_TARGETS:
        raise table.fail("to", targets, to)
    quantize = table.text("quantize")
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise table.fail("quantize", " or ".join(repr(q) for q in QUANTIZE_MODES), quantize)
    limits: dict[str, float | None] = {}
    for key, low, high in (
        ("max_abs_diff", 0.0, None),
        ("min_agreement", 0.0, 1.0),
        ("max_accuracy_drop", 0.0, 100.0),
    ):
        expected = f"a number >= {low:g}" + ("" if high is None else f" and <= {high:g}")
        value = table.get(key, (int, float), expected)
        if value is not None and not (value >= low and (high is None or value <= high)):
            raise table.fail(key, expected, value)  # NaN fails here too
        limits[key] = None if value is None else float(value)
    if limits["max_accuracy_drop"] is not None:
        raise table.error(
            "max_accuracy_drop",
            "cannot be checked at load (warmup samples carry no labels: the gate would fail "
            "every time and the source model serve); gate on max_abs_diff or min_agreement "
            "here, or measure accuracy with keepwarm optimize --labels",
        )
    return OptimizeConfig(to=to, quantize=quantize, **limits)
