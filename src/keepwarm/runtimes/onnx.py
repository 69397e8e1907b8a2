"""ONNX: a ``.onnx`` file, or a directory holding one (``model.onnx`` preferred).

Served by an ONNX Runtime ``InferenceSession`` on the CPU execution provider.

Options (all optional):

- ``intra_op_num_threads`` (int): threads inside one operator; ONNX Runtime's default (one
  per core) otherwise.
- ``inter_op_num_threads`` (int): threads across operators (parallel execution mode only).
- ``graph_optimization_level``: ``"disable"``, ``"basic"``, ``"extended"`` or ``"all"``
  (default ``"all"``). An ``onnxruntime.GraphOptimizationLevel`` is accepted only when the
  runtime is called directly: a load description holds plain values.

Other keys are ignored. ``nbytes`` is the size of the graph's initializers when the
``onnx`` package is installed (``nbytes_source="framework"``), else the file size.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from keepwarm.errors import InvalidConfigError, ModelLoadError
from keepwarm.runtimes._common import (
    DEFAULT_SIGNATURE,
    OBJECT,
    check_signature,
    closed,
    find_file,
    shape_of,
)
from keepwarm.runtimes.base import files_nbytes
from keepwarm.signature import Signature, TensorSpec

FORMAT = "onnx"
_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
_TYPES = {
    "float": "float32",
    "double": "float64",
    "float16": "float16",
    "int8": "int8",
    "int16": "int16",
    "int32": "int32",
    "int64": "int64",
    "uint8": "uint8",
    "uint16": "uint16",
    "uint32": "uint32",
    "uint64": "uint64",
    "bool": "bool",
}


class OnnxRuntime:
    name = "onnx"
    priority = 30
    unsafe = False

    def detect(self, path: Path) -> bool:
        return find_file(path, (".onnx",), ("model.onnx",)) is not None

    def incomplete(self, path: Path) -> str | None:
        file = find_file(path, (".onnx",), ("model.onnx",))
        if file is None:
            return f"no .onnx file in {path}"
        if file.stat().st_size == 0:
            return f"{file} is empty"
        return None

    def load(self, path: Path, *, signature: str | None, options: Mapping[str, Any]) -> OnnxModel:
        file = find_file(path, (".onnx",), ("model.onnx",))
        if file is None:
            raise ModelLoadError(f"no .onnx file in {path}", format=FORMAT)
        check_signature(signature, DEFAULT_SIGNATURE, f"the ONNX model {file}")
        import onnxruntime as ort

        session_options = _session_options(ort, options)
        try:
            session = ort.InferenceSession(
                str(file), sess_options=session_options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelLoadError(
                f"cannot load the ONNX model {file}: {type(exc).__name__}: {exc}", format=FORMAT
            ) from exc
        inputs = session.get_inputs()
        sig = Signature(
            inputs=tuple(_spec(arg) for arg in inputs),
            outputs=tuple(_spec(arg) for arg in session.get_outputs()),
            name=DEFAULT_SIGNATURE,
            batch_groups=_batch_groups(inputs),
        )
        nbytes = _initializer_nbytes(file)
        if nbytes is None:
            return OnnxModel(session, sig, files_nbytes(file), "files")
        return OnnxModel(session, sig, nbytes, "framework")


class OnnxModel:
    def __init__(self, session: Any, signature: Signature, nbytes: int, nbytes_source: str) -> None:
        self._session = session
        self._run = session.run
        self._names = [spec.name for spec in signature.outputs]
        self._single = self._names[0] if len(self._names) == 1 else None
        self.signature = signature
        self.nbytes = nbytes
        self.nbytes_source = nbytes_source

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = self._names
        if self._single is not None:  # the common case, without zip's bookkeeping
            return {self._single: self._run(names, inputs)[0]}
        return dict(zip(names, self._run(names, inputs), strict=True))

    def close(self) -> None:
        self._run = closed
        self._session = None


def _session_options(ort: Any, options: Mapping[str, Any]) -> Any:
    result = ort.SessionOptions()
    for key in ("intra_op_num_threads", "inter_op_num_threads"):
        if key in options:
            value = options[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidConfigError(
                    f"onnx option {key} must be an integer >= 0, got {value!r}"
                )
            setattr(result, key, value)
    level = options.get("graph_optimization_level")
    if isinstance(level, str):
        if level.lower() not in _LEVELS:
            raise InvalidConfigError(
                f"onnx option graph_optimization_level must be one of "
                f"{', '.join(_LEVELS)}, got {level!r}"
            )
        level = getattr(ort.GraphOptimizationLevel, _LEVELS[level.lower()])
    if level is not None:
        result.graph_optimization_level = level
    return result


def _dtype(onnx_type: str) -> np.dtype[Any]:
    inner = onnx_type.removeprefix("tensor(").removesuffix(")")
    if inner == "string":
        return OBJECT
    if inner not in _TYPES:
        raise ModelLoadError(f"unsupported ONNX tensor type {onnx_type!r}", format=FORMAT)
    return np.dtype(_TYPES[inner])


def _spec(arg: Any) -> TensorSpec:
    return TensorSpec(arg.name, _dtype(arg.type), shape_of(arg.shape))


def _batch_groups(inputs: list[Any]) -> tuple[tuple[str, ...], ...]:
    """Inputs whose leading dimension is the same symbol (``N``, ``batch``): one size. An
    unnamed unknown dimension is independent of every other, as ONNX defines it."""
    by_symbol: dict[str, list[str]] = {}
    for arg in inputs:
        dims = arg.shape
        if dims and isinstance(dims[0], str) and dims[0]:
            by_symbol.setdefault(dims[0], []).append(arg.name)
    return tuple(tuple(names) for names in by_symbol.values())


def _initializer_nbytes(file: Path) -> int | None:
    """Bytes of the graph's weights, or None without the ``onnx`` package."""
    try:
        import onnx
        from onnx.helper import tensor_dtype_to_np_dtype
    except ImportError:
        return None
    try:
        proto = onnx.load(str(file), load_external_data=False)
        total = 0
        for init in proto.graph.initializer:
            count = int(np.prod(init.dims)) if init.dims else 1
            total += count * tensor_dtype_to_np_dtype(init.data_type).itemsize
    except Exception:
        return None
    return total or None
