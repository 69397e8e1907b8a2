"""Keras: a ``.keras`` (or legacy ``.h5``) file, or a directory holding one.

Loaded with ``keras.saving.load_model(compile=False)`` and served through one
``tf.function`` traced at load with a fixed input signature (batch dimension free). The
hot path never calls ``model.predict()``, which costs about 40 ms a call; the function
runs as one flat TensorFlow op where it can (``_flatcall``), ``call_path`` says so.

Input names are the names of the model's ``keras.Input`` layers (give them explicitly:
default names depend on what was built before); output names are the output layers' names
(``output_0, output_1, ...`` when they are missing or not unique; a dict-returning model's
keys are used as they are). One option, ``tf_executor``: as for a SavedModel (``_executor``).
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from keepwarm.errors import ModelLoadError
from keepwarm.runtimes._common import (
    DEFAULT_SIGNATURE,
    OBJECT,
    check_signature,
    closed,
    find_file,
    import_framework,
    output_names,
    shape_of,
)
from keepwarm.runtimes._executor import executor_option
from keepwarm.runtimes._flatcall import FlatCalled, NotFlat
from keepwarm.signature import Signature, TensorSpec

FORMAT = "keras"
_SUFFIXES = (".keras", ".h5", ".hdf5")
_PREFERRED = ("model.keras", "model.h5")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


class KerasRuntime:
    name = "keras"
    priority = 20
    unsafe = False

    def detect(self, path: Path) -> bool:
        return find_file(path, _SUFFIXES, _PREFERRED) is not None

    def incomplete(self, path: Path) -> str | None:
        file = find_file(path, _SUFFIXES, _PREFERRED)
        if file is None:
            return f"no .keras or .h5 file in {path}"
        if file.suffix.lower() == ".keras":
            # The zip directory sits at the end: a half-copied file has none.
            return None if zipfile.is_zipfile(file) else f"{file} is truncated or not a zip"
        with file.open("rb") as handle:
            if handle.read(8) != _HDF5_MAGIC:
                return f"{file} is empty or not an HDF5 file"
        return None

    def load(self, path: Path, *, signature: str | None, options: Mapping[str, Any]) -> KerasModel:
        file = find_file(path, _SUFFIXES, _PREFERRED)
        if file is None:
            raise ModelLoadError(f"no .keras or .h5 file in {path}", format=FORMAT)
        check_signature(signature, DEFAULT_SIGNATURE, f"the Keras model {file}")
        executor = executor_option(options, "keras")
        reason = self.incomplete(file)
        if reason is not None:
            raise ModelLoadError(f"Keras model is incomplete: {reason}", format=FORMAT)
        keras = import_framework("keras")
        try:
            model = keras.saving.load_model(file, compile=False)
        except Exception as exc:
            raise ModelLoadError(
                f"cannot load the Keras model {file}: {type(exc).__name__}: {exc}", format=FORMAT
            ) from exc
        try:
            return KerasModel(model, DEFAULT_SIGNATURE, executor)
        except Exception as exc:
            raise ModelLoadError(
                f"cannot serve the Keras model {file}: {type(exc).__name__}: {exc}", format=FORMAT
            ) from exc


def _dtype(name: Any) -> np.dtype[Any]:
    text = str(getattr(name, "name", name))
    return OBJECT if text == "string" else np.dtype(text)


class KerasModel(FlatCalled):
    """A Keras model behind one traced concrete function."""

    def __init__(self, model: Any, name: str, executor: str = "single_threaded") -> None:
        import keras
        import tensorflow as tf

        inputs = list(getattr(model, "inputs", None) or [])
        if not inputs:
            raise ValueError("the model has no defined inputs; build it with keras.Input(...)")
        structure = model.input
        specs = [TensorSpec(t.name, _dtype(t.dtype), shape_of(t.shape)) for t in inputs]
        tf_specs = [
            tf.TensorSpec(t.shape, tf.as_dtype(t.dtype), name=f"input_{i}")
            for i, t in enumerate(inputs)
        ]

        flat_outputs = list(model.outputs or [])
        declared = list(getattr(model, "output_names", None) or [])
        names = output_names(declared, len(flat_outputs))

        def serve(*tensors: Any) -> dict[str, Any]:
            packed = keras.tree.pack_sequence_as(structure, list(tensors))
            result = model(packed, training=False)
            if isinstance(result, Mapping):
                return dict(result)
            return dict(zip(names, keras.tree.flatten(result), strict=True))

        self._model = model
        self._fn = tf.function(serve, input_signature=tf_specs).get_concrete_function()
        self._order = [s.name for s in specs]
        self._tensor = tf.constant
        out = self._fn.structured_outputs
        self.signature = Signature(
            inputs=tuple(specs),
            outputs=tuple(
                TensorSpec(
                    k,
                    _dtype(v.dtype.name),
                    shape_of(None if v.shape.rank is None else v.shape.as_list()),
                )
                for k, v in out.items()
            ),
            name=name,
        )
        self.nbytes = sum(int(np.prod(w.shape)) * _dtype(w.dtype).itemsize for w in model.weights)
        self.nbytes_source = "framework"
        self.prefer_flat(self._fn, self._flat_order, executor)

    def _flat_order(self, parameters: list[str]) -> list[str]:
        if len(parameters) != len(self._order):
            raise NotFlat(f"the function takes {len(parameters)} inputs, not {len(self._order)}")
        return self._order

    def call_ordinary(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The traced function called with one tensor per input, in order."""
        tensor = self._tensor
        outputs = self._fn(*[tensor(inputs[name]) for name in self._order])
        return {name: value.numpy() for name, value in outputs.items()}

    def tf_call(self, tensors: Mapping[str, Any]) -> dict[str, Any]:
        """Call the model on TensorFlow tensors named as its inputs; traceable inside a
        ``tf.function`` (``keepwarm.optimize`` converts a model through it)."""
        return dict(self._fn(*[tensors[name] for name in self._order]))

    def close(self) -> None:
        self._fn = self._call = closed
        self._model = None
