"""TensorFlow SavedModel: a directory with ``saved_model.pb`` and ``variables/``.

Served through one of its signatures (``serving_default`` unless ``signature=`` names
another), called directly as a concrete function: no Keras, no ``predict()``. The
signature runs as one flat TensorFlow op where it can (``_flatcall``: about a third less
CPU per call than binding keyword arguments); ``call_path`` says which way and why.

Options:

- ``tags``: the MetaGraph tags to load (a string or a list of strings); TensorFlow's
  default otherwise.
- ``tf_executor``: ``"single_threaded"`` (default) or ``"default"``: which TensorFlow
  executor runs the flat call (``_executor``); the model's ``tf_executor`` says which does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keepwarm.errors import ModelLoadError, ModelNotFoundError
from keepwarm.runtimes._bundle import checkpoint_incomplete
from keepwarm.runtimes._common import OBJECT, closed, import_framework, shape_of
from keepwarm.runtimes._executor import executor_option
from keepwarm.runtimes._flatcall import FlatCalled, NotFlat
from keepwarm.runtimes.base import files_nbytes
from keepwarm.signature import Signature, TensorSpec

FORMAT = "savedmodel"
_MARKERS = ("saved_model.pb", "saved_model.pbtxt")


def find_root(path: Path) -> Path | None:
    """The SavedModel directory for ``path``: itself, or its only child holding one."""
    if path.is_file():
        return path.parent if path.name in _MARKERS else None
    if not path.is_dir():
        return None
    if any((path / m).is_file() for m in _MARKERS):
        return path
    children = [
        c for c in path.iterdir() if c.is_dir() and any((c / m).is_file() for m in _MARKERS)
    ]
    return children[0] if len(children) == 1 else None


def has_savedmodel_parts(path: Path) -> bool:
    """True when the directory ``path`` holds any part of a SavedModel (a graph file, or a
    checkpoint index without one), whole or not: a copy that must then be complete."""
    return find_root(path) is not None or (path / "variables" / "variables.index").is_file()


class SavedModelRuntime:
    name = "savedmodel"
    priority = 10
    unsafe = False

    def detect(self, path: Path) -> bool:
        return find_root(path) is not None

    def incomplete(self, path: Path) -> str | None:
        root = find_root(path)
        if root is None:
            return f"no saved_model.pb in {path}"
        graph = next(root / m for m in _MARKERS if (root / m).is_file())
        if graph.stat().st_size == 0:
            return f"{graph} is empty"
        variables = root / "variables"
        # TensorFlow 2 always writes a checkpoint; fingerprint.pb marks a TF2 SavedModel.
        if variables.is_dir() or (root / "fingerprint.pb").is_file():
            return checkpoint_incomplete(variables)
        return None

    def load(self, path: Path, *, signature: str | None, options: Mapping[str, Any]) -> SavedModel:
        root = find_root(path)
        if root is None:
            raise ModelLoadError(f"no SavedModel (saved_model.pb) in {path}", format=FORMAT)
        reason = self.incomplete(root)
        if reason is not None:
            raise ModelLoadError(f"SavedModel at {root} is incomplete: {reason}", format=FORMAT)
        executor = executor_option(options, "savedmodel")
        tf = import_framework("tensorflow")
        tags = options.get("tags")
        if isinstance(tags, str):
            tags = [tags]
        try:
            loaded = tf.saved_model.load(str(root), tags=list(tags) if tags else None)
        except Exception as exc:
            raise ModelLoadError(_explain(root, exc), format=FORMAT) from exc
        wanted = signature or "serving_default"
        available = sorted(loaded.signatures.keys())
        if wanted not in available:
            raise ModelNotFoundError(
                f"signature {wanted!r} not found in the SavedModel at {root}; "
                f"available signatures: {', '.join(available) or '(none)'}"
            )
        fn = loaded.signatures[wanted]
        try:
            sig = _signature(wanted, fn)
        except Exception as exc:
            raise ModelLoadError(
                f"SavedModel at {root}: signature {wanted!r} cannot be described: {exc}",
                format=FORMAT,
            ) from exc
        nbytes = _variables_nbytes(loaded, fn)
        if nbytes:
            return SavedModel(loaded, fn, sig, nbytes, "framework", executor)
        return SavedModel(loaded, fn, sig, files_nbytes(root), "files", executor)


class SavedModel(FlatCalled):
    """One signature of a loaded SavedModel. Keeps the loaded object alive."""

    def __init__(
        self,
        loaded: Any,
        fn: Any,
        signature: Signature,
        nbytes: int,
        nbytes_source: str,
        executor: str = "single_threaded",
    ) -> None:
        import tensorflow as tf

        self._loaded = loaded  # the signature's variables die with this object
        self._fn = fn
        self._tensor = tf.constant
        self.signature = signature
        self.nbytes = nbytes
        self.nbytes_source = nbytes_source
        self.prefer_flat(fn, self._flat_order, executor)

    def _flat_order(self, parameters: list[str]) -> list[str]:
        if sorted(parameters) != sorted(s.name for s in self.signature.inputs):
            raise NotFlat(f"the flat parameters {parameters} are not the signature's inputs")
        return parameters

    def call_ordinary(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The signature called with keyword arguments, as TensorFlow documents it."""
        tensor = self._tensor
        outputs = self._fn(**{name: tensor(value) for name, value in inputs.items()})
        return {name: value.numpy() for name, value in outputs.items()}

    def tf_call(self, tensors: Mapping[str, Any]) -> dict[str, Any]:
        """Call the signature on TensorFlow tensors named as its inputs; traceable inside a
        ``tf.function`` (``keepwarm.optimize`` converts a model through it)."""
        return dict(self._fn(**tensors))

    def close(self) -> None:
        self._fn = self._call = closed
        self._loaded = None


def _np_dtype(dtype: Any) -> np.dtype[Any]:
    try:
        result: np.dtype[Any] = np.dtype(dtype.as_numpy_dtype)
    except TypeError:  # resource, variant: nothing numpy can hold
        return OBJECT
    return result


def _spec(name: str, spec: Any) -> TensorSpec:
    shape = spec.shape
    dims = None if shape.rank is None else shape.as_list()
    return TensorSpec(name, _np_dtype(spec.dtype), shape_of(dims))


def _signature(name: str, fn: Any) -> Signature:
    args, kwargs = fn.structured_input_signature
    if args:
        raise ValueError("positional inputs are not supported; signatures take named inputs")
    outputs = fn.structured_outputs
    if not isinstance(outputs, Mapping):
        raise ValueError(f"outputs must be a dict of named tensors, got {type(outputs).__name__}")
    return Signature(
        inputs=tuple(_spec(k, v) for k, v in kwargs.items()),
        outputs=tuple(_spec(k, v) for k, v in outputs.items()),
        name=name,
    )


def _variables_nbytes(loaded: Any, fn: Any) -> int:
    import tensorflow as tf

    found: dict[int, Any] = {}
    own = getattr(loaded, "variables", ())
    for var in [*(own if isinstance(own, Sequence) else ()), *fn.variables]:
        if isinstance(var, tf.Variable):
            found[id(var)] = var
    total = 0
    for var in found.values():
        elements = var.shape.num_elements()
        if elements is not None and var.dtype != tf.string:
            total += elements * var.dtype.size
    return total


def _explain(root: Path, exc: Exception) -> str:
    text = str(exc)
    if "saved_model.pb" in text or "parse" in text.lower():
        why = "saved_model.pb is corrupt or not a SavedModel"
    elif "variables" in text or "Read less bytes" in text or type(exc).__name__ == "DataLossError":
        why = "the variables (checkpoint) are truncated or corrupt"
    else:
        why = "TensorFlow could not load it"
    return f"cannot load the SavedModel at {root}: {why} ({type(exc).__name__}: {text[:500]})"
