"""Pickled models (``.pkl``, ``.pickle``, ``.joblib``): refused unless ``allow_unsafe``.

Unpickling runs arbitrary code, so this runtime is marked ``unsafe``: the loading layer
refuses it with ``UnsafeFormatError`` before ``load`` is called unless the caller passes
``options={"allow_unsafe": True}`` (or ``Repository(..., allow_unsafe=True)``).
``.joblib`` files need the ``joblib`` package.

The object must have ``predict``. A one-input model's ``predict`` gets the input array
(scikit-learn style); a model with several inputs gets the dict. The signature is, in order:
the object's ``signature`` attribute (a ``Signature``); ``[pickle.signature]`` in a
``keepwarm.toml`` beside the file (same form as ``[python.signature]``); else one input
``input`` (float64, ``[-1, n_features_in_]`` when the object says, else any shape) and one
output ``output`` (the dtype of ``classes_`` for a classifier, else float64).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from keepwarm.errors import InvalidConfigError, ModelLoadError
from keepwarm.runtimes._common import DEFAULT_SIGNATURE, check_signature, closed, find_file
from keepwarm.runtimes.python import read_config, signature_from_table, wrap_outputs
from keepwarm.signature import Signature, TensorSpec

FORMAT = "pickle"
_SUFFIXES = (".pkl", ".pickle", ".joblib")
_PREFERRED = ("model.pkl", "model.pickle", "model.joblib")


class PickleRuntime:
    name = "pickle"
    priority = 50
    unsafe = True

    def detect(self, path: Path) -> bool:
        return find_file(path, _SUFFIXES, _PREFERRED) is not None

    def incomplete(self, path: Path) -> str | None:
        file = find_file(path, _SUFFIXES, _PREFERRED)
        if file is None:
            return f"no .pkl, .pickle or .joblib file in {path}"
        if file.stat().st_size == 0:
            return f"{file} is empty"
        if file.suffix.lower() != ".joblib":
            with file.open("rb") as handle:
                handle.seek(-1, 2)
                if handle.read(1) != pickle.STOP:
                    return f"{file} is truncated (no pickle STOP opcode at the end)"
        return None

    def load(
        self, path: Path, *, signature: str | None, options: Mapping[str, Any]
    ) -> PickledModel:
        file = find_file(path, _SUFFIXES, _PREFERRED)
        if file is None:
            raise ModelLoadError(f"no .pkl, .pickle or .joblib file in {path}", format=FORMAT)
        reason = self.incomplete(file)
        if reason is not None:
            raise ModelLoadError(f"pickled model is incomplete: {reason}", format=FORMAT)
        try:
            obj = _unpickle(file)
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(
                f"cannot unpickle {file}: {type(exc).__name__}: {exc}", format=FORMAT
            ) from exc
        if not callable(getattr(obj, "predict", None)):
            raise InvalidConfigError(
                f"the object in {file} ({type(obj).__name__}) has no predict() method"
            )
        sig = getattr(obj, "signature", None)
        if not isinstance(sig, Signature):
            table = read_config(file.parent).get("pickle", {})
            sig = signature_from_table(
                table.get("signature") if isinstance(table, Mapping) else None,
                "[pickle.signature]",
                DEFAULT_SIGNATURE,
            ) or _guess(obj)
        check_signature(signature, sig.name, f"the pickled model {file}")
        return PickledModel(obj, sig, file.stat().st_size)


def _unpickle(file: Path) -> Any:
    if file.suffix.lower() == ".joblib":
        try:
            import joblib
        except ImportError as exc:
            raise ModelLoadError(
                f"{file} needs the joblib package: pip install joblib", format=FORMAT
            ) from exc
        return joblib.load(file)
    with file.open("rb") as handle:
        return pickle.load(handle)  # the loading layer refused it unless allow_unsafe


def _guess(obj: Any) -> Signature:
    features = getattr(obj, "n_features_in_", None)
    classes = getattr(obj, "classes_", None)
    out_dtype = np.asarray(classes).dtype if classes is not None else np.dtype("float64")
    width = int(features) if isinstance(features, int | np.integer) else None
    shape = None if width is None else (None, width)
    return Signature(
        inputs=(TensorSpec("input", np.dtype("float64"), shape),),
        outputs=(TensorSpec("output", out_dtype, None),),
    )


class PickledModel:
    def __init__(self, obj: Any, signature: Signature, nbytes: int) -> None:
        self._predict = obj.predict
        self._obj = obj
        self._single = signature.inputs[0].name if len(signature.inputs) == 1 else None
        self._names = [spec.name for spec in signature.outputs]
        self.signature = signature
        self.nbytes = nbytes
        self.nbytes_source = "files"

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._single is not None:
            return wrap_outputs(self._predict(inputs[self._single]), self._names)
        return wrap_outputs(self._predict(inputs), self._names)

    def close(self) -> None:
        self._predict = closed
        self._obj = None
