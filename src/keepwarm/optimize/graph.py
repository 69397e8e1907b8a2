"""ONNX graph steps: conversion from TensorFlow (tf2onnx), ONNX Runtime's graph
optimisations, and quantization. They run in the conversion child process
(``keepwarm.optimize.child``); TensorFlow is imported only to convert.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keepwarm.config_optimize import QUANTIZE_MODES

__all__ = ["QUANTIZE_MODES", "convert_tensorflow", "copy_graph", "optimize_graph", "quantize"]
OPSET = 17


def convert_tensorflow(model: Any, output: Path) -> None:
    """Write ``model`` (a keepwarm SavedModel or Keras model, which have ``tf_call``) as an
    ONNX graph whose inputs and outputs keep the names of the model's signature."""
    import tensorflow as tf
    import tf2onnx

    names = [spec.name for spec in model.signature.inputs]
    specs = [
        tf.TensorSpec(
            None if spec.shape is None else list(spec.shape),
            tf.as_dtype(spec.dtype),
            name=spec.name,
        )
        for spec in model.signature.inputs
    ]

    @tf.function(input_signature=specs)  # type: ignore[untyped-decorator]
    def serve(*tensors: Any) -> dict[str, Any]:
        outputs: dict[str, Any] = model.tf_call(dict(zip(names, tensors, strict=True)))
        return outputs

    tf2onnx.convert.from_function(
        serve, input_signature=specs, opset=OPSET, output_path=str(output)
    )


def optimize_graph(source: Path, output: Path, level: str) -> None:
    """ONNX Runtime's graph optimisations at ``level`` ("basic" or "extended"), saved.
    "extended" fuses into ONNX Runtime's own operators: the result is for ONNX Runtime."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    }[level]
    options.optimized_model_filepath = str(output)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


def quantize(
    source: Path, output: Path, mode: str, calibration: Sequence[Mapping[str, np.ndarray]]
) -> None:
    """Quantize ``source`` into ``output``: ``dynamic`` (int8 weights, activations
    quantized at run time), ``float16`` (weights and arithmetic; inputs and outputs stay
    float32) or ``static`` (int8, activation ranges calibrated on ``calibration``)."""
    if mode == "float16":
        import onnx
        from onnxconverter_common import float16

        proto = float16.convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
        onnx.save(proto, str(output))
        return
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    if mode == "dynamic":
        quantize_dynamic(str(source), str(output), weight_type=QuantType.QInt8)
        return

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._rows: Iterator[dict[str, np.ndarray]] = _rows(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._rows, None)

    quantize_static(
        str(source),
        str(output),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )


def _rows(requests: Sequence[Mapping[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
    """One calibration input per sample row (batch 1): any batch size the graph allows."""
    for request in requests:
        count = len(next(iter(request.values())))
        for row in range(count):
            yield {name: value[row : row + 1] for name, value in request.items()}


def copy_graph(source: Path, output: Path) -> None:
    shutil.copyfile(source, output)
