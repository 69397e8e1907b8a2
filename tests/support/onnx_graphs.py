"""Tiny ONNX graphs built with the ``onnx`` helper API, each with a property a test needs:
an integer input, inputs sharing a symbolic leading dimension, and constraints on unknown
dimensions that inputs of size 1 break (as real detectors and audio models have)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # read by every ONNX Runtime this project supports

Dims = list[int | str | None]


def _save(
    path: Path,
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: tuple[onnx.TensorProto, ...] = (),
) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _value(name: str, elem: int, dims: Dims) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, dims)


def identity(path: Path, elem: int = TensorProto.INT32, dims: Dims | None = None) -> Path:
    """``y = x``: what the model was given is what it answers (default: int32 ``[N]``)."""
    dims = ["N"] if dims is None else dims
    return _save(
        path,
        [helper.make_node("Identity", ["x"], ["y"])],
        [_value("x", elem, dims)],
        [_value("y", elem, dims)],
    )


def two_batched_inputs(path: Path, b_dim: str = "N") -> Path:
    """Inputs ``a: float32[N, 4]`` and ``b: int64[b_dim]`` (by default sharing the symbol
    ``N``), each echoed on its own (so different sizes would not fail inside the runtime)."""
    return _save(
        path,
        [
            helper.make_node("Identity", ["a"], ["a_out"]),
            helper.make_node("Identity", ["b"], ["b_out"]),
        ],
        [_value("a", TensorProto.FLOAT, ["N", 4]), _value("b", TensorProto.INT64, [b_dim])],
        [_value("a_out", TensorProto.FLOAT, ["N", 4]), _value("b_out", TensorProto.INT64, [b_dim])],
    )


def frames_of_32(path: Path) -> Path:
    """``x: float32[N, L]`` reshaped to ``[N, L / 32, 32]``: L must be a multiple of 32 (a
    detector's stride); ``L = 1`` fails at run time, not at load time."""
    shape = numpy_helper.from_array(np.array([0, -1, 32], np.int64), "frame_shape")
    return _save(
        path,
        [helper.make_node("Reshape", ["x", "frame_shape"], ["y"])],
        [_value("x", TensorProto.FLOAT, ["N", "L"])],
        [_value("y", TensorProto.FLOAT, ["N", None, 32])],
        (shape,),
    )


def conv_over_time(path: Path, kernel: int = 5) -> Path:
    """``x: float32[N, 1, T]`` through a 1-D convolution of width ``kernel`` without padding:
    an audio model that needs at least ``kernel`` samples (``T = 1`` fails at run time)."""
    weight = numpy_helper.from_array(np.full((1, 1, kernel), 0.5, np.float32), "w")
    return _save(
        path,
        [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[kernel])],
        [_value("x", TensorProto.FLOAT, ["N", 1, "T"])],
        [_value("y", TensorProto.FLOAT, ["N", 1, None])],
        (weight,),
    )


def dense(path: Path, inputs: int = 16, outputs: int = 8, seed: int = 0) -> Path:
    """``y = relu(x @ W + b)``, ``x: float32[N, inputs]``, random weights: a small MLP layer."""
    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(rng.standard_normal((inputs, outputs)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.standard_normal(outputs).astype(np.float32), "B")
    return _save(
        path,
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "B"], ["pre"]),
            helper.make_node("Relu", ["pre"], ["y"]),
        ],
        [_value("x", TensorProto.FLOAT, ["N", inputs])],
        [_value("y", TensorProto.FLOAT, ["N", outputs])],
        (weight, bias),
    )
