"""Python: your own class, with ``load(path)`` and ``predict(inputs)``.

A model directory holds a ``keepwarm.toml`` naming the class, and usually the module too::

    [python]
    class = "model:Model"          # module:Class (module may sit beside keepwarm.toml)

    [python.signature]             # optional when the class has a `signature` attribute
    inputs = [{ name = "x", dtype = "float32", shape = [-1, 8] }]
    outputs = [{ name = "y", dtype = "float32", shape = [-1, 4] }]

``options["class"]`` (a ``"module:Class"`` string or the class itself) overrides the file,
and then no ``keepwarm.toml`` is needed. (``keepwarm.load`` takes it into the load
description's ``python_class``, ``"module:qualname"``, and hands it back here; a name that
cannot be imported where the model is loaded is a ``ModelLoadError``.)

A class named by ``keepwarm.toml`` is code that came with the model: whoever can write the
model directory (or the bucket it is copied from) would run code in the server. It is
refused with ``UnsafeFormatError`` unless the caller allows it:
``keepwarm.load(..., options={"allow_unsafe": True})`` or ``Repository(..., allow_unsafe=True)``.
A class the caller names in ``options["class"]`` is the caller's own code and is allowed.

The class is built with no arguments, then ``load(path)`` gets the model directory;
``close()`` is called on unload if defined. ``predict`` receives a dict of name to array
(already checked against the signature) and returns a dict of name to array, or one array
for a one-output model; the answer is checked against the signature's outputs
(``keepwarm.runtimes._outputs``: names, dtypes cast where no value changes, shapes).

A signature is required: the instance's ``signature`` attribute (a
``keepwarm.signature.Signature``, checked after ``load``) wins, else ``[python.signature]``;
without either, loading fails with ``InvalidConfigError`` (inputs cannot be guessed from code).
``shape`` uses -1 for any size and may be left out (any rank); ``dtype`` is a numpy dtype
name, or ``string`` for text.

When the module is found in the model directory, the directory is put on ``sys.path`` only
while importing it, and a module of the same name imported from elsewhere (say, another
version of the model) is forgotten first, so each version runs its own code.
"""

from __future__ import annotations

import importlib
import sys
import threading
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from keepwarm.errors import (
    InternalError,
    InvalidConfigError,
    ModelLoadError,
    UnsafeFormatError,
)
from keepwarm.runtimes._common import DEFAULT_SIGNATURE, OBJECT, check_signature, closed
from keepwarm.runtimes._outputs import checked_outputs
from keepwarm.runtimes.base import files_nbytes
from keepwarm.signature import Signature, TensorSpec

FORMAT = "python"
CONFIG = "keepwarm.toml"
_import_lock = threading.Lock()


def model_dir(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def read_config(directory: Path) -> dict[str, Any]:
    """The parsed ``keepwarm.toml`` in ``directory`` ({} when there is none)."""
    file = directory / CONFIG
    if not file.is_file():
        return {}
    try:
        with file.open("rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidConfigError(f"{file} cannot be read: {exc}") from exc


def _tensor(entry: Any, where: str) -> TensorSpec:
    if not isinstance(entry, Mapping) or "name" not in entry or "dtype" not in entry:
        raise InvalidConfigError(f"{where}: each tensor needs a name and a dtype, got {entry!r}")
    dtype_name = str(entry["dtype"])
    try:
        dtype = OBJECT if dtype_name in ("string", "bytes", "object") else np.dtype(dtype_name)
    except TypeError as exc:
        raise InvalidConfigError(f"{where}: unknown dtype {dtype_name!r}") from exc
    shape = entry.get("shape")
    if shape is not None and (
        not isinstance(shape, list) or not all(isinstance(d, int) for d in shape)
    ):
        raise InvalidConfigError(f"{where}: shape must be a list of integers (-1 = any)")
    dims = None if shape is None else tuple(None if d < 0 else d for d in shape)
    return TensorSpec(str(entry["name"]), dtype, dims)


def signature_from_table(table: Any, where: str, name: str) -> Signature | None:
    """A Signature from a ``{inputs = [...], outputs = [...]}`` table, or None without one."""
    if table is None:
        return None
    if not isinstance(table, Mapping) or not table.get("inputs") or "outputs" not in table:
        raise InvalidConfigError(f"{where} needs `inputs` and `outputs` lists")
    return Signature(
        inputs=tuple(_tensor(e, f"{where}.inputs") for e in table["inputs"]),
        outputs=tuple(_tensor(e, f"{where}.outputs") for e in table["outputs"]),
        name=name,
    )


def _forget_foreign(top: str, directory: Path) -> None:
    """Drop ``top`` and its submodules from ``sys.modules`` unless they come from
    ``directory``. Other threads import meanwhile (a server loads several models at once):
    the names are copied in one step (``tuple`` of a dict runs in C, holding the
    interpreter lock) before they are filtered, and an entry gone since is passed over."""
    for name in tuple(sys.modules):
        if name != top and not name.startswith(top + "."):
            continue
        file = getattr(sys.modules.get(name), "__file__", None)
        if file is None or not Path(file).resolve().is_relative_to(directory):
            sys.modules.pop(name, None)


def resolve_class(target: Any, directory: Path) -> Any:
    """The class named by ``target`` (``"module:Class"`` or a class object)."""
    if isinstance(target, type):
        return target
    if not isinstance(target, str) or ":" not in target:
        raise InvalidConfigError(
            f"the Python model class must be 'module:Class' or a class, got {target!r}"
        )
    module_name, _, qualname = target.partition(":")
    top = module_name.split(".")[0]
    directory = directory.resolve()
    local = (directory / f"{top}.py").is_file() or (directory / top / "__init__.py").is_file()
    with _import_lock:
        if local:
            _forget_foreign(top, directory)
            sys.path.insert(0, str(directory))
            importlib.invalidate_caches()
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise ModelLoadError(
                f"cannot import {module_name!r} for {target!r}: {type(exc).__name__}: {exc}",
                format=FORMAT,
            ) from exc
        finally:
            if local:
                sys.path.remove(str(directory))
    found: Any = module
    for part in qualname.split("."):
        if not hasattr(found, part):
            hint = ""
            if "<locals>" in qualname:
                hint = (
                    ": a class defined inside a function has no importable name; define it "
                    "at module level"
                )
            elif module_name == "__main__":  # the script's, not this process's __main__
                hint = (
                    ": a class defined in the script being run is not there in a worker "
                    "process; define it in a module the script imports"
                )
            raise ModelLoadError(
                f"cannot import {target!r}: {module_name!r} has no attribute {qualname!r}{hint}",
                format=FORMAT,
            )
        found = getattr(found, part)
    return found


class PythonRuntime:
    name = "python"
    priority = 40
    unsafe = False

    def detect(self, path: Path) -> bool:
        try:
            return path.is_dir() and isinstance(read_config(path).get("python"), Mapping)
        except InvalidConfigError:
            return False

    def incomplete(self, path: Path) -> str | None:
        try:
            config = read_config(model_dir(path))
        except InvalidConfigError as exc:
            return str(exc)
        del config  # without a [python] table the class may come from options; load decides
        return None

    def load(self, path: Path, *, signature: str | None, options: Mapping[str, Any]) -> PythonModel:
        directory = model_dir(path)
        table = read_config(directory).get("python", {})
        if not isinstance(table, Mapping):
            raise InvalidConfigError(f"[python] in {directory / CONFIG} must be a table")
        target = options.get("class")
        if target is None:
            target = table.get("class")
            if target is None:
                raise InvalidConfigError(
                    f'no Python model class for {directory}: set class = "module:Class" under '
                    f"[python] in {CONFIG}, or pass options={{'class': ...}}"
                )
            if options.get("allow_unsafe") is not True:
                raise UnsafeFormatError(
                    f"{directory / CONFIG} names the class {target!r}: loading it runs code "
                    "that came with the model. If you trust the model directory, allow it "
                    "with keepwarm.load(..., options={'allow_unsafe': True}) or "
                    "Repository(..., allow_unsafe=True)",
                    format=FORMAT,
                )
        cls = resolve_class(target, directory)
        try:
            instance = cls()
            instance.load(directory)
        except Exception as exc:
            raise ModelLoadError(
                f"{target!r} failed to load {directory}: {type(exc).__name__}: {exc}", format=FORMAT
            ) from exc
        if not callable(getattr(instance, "predict", None)):
            raise InvalidConfigError(f"{target!r} has no predict(inputs) method")
        sig = getattr(instance, "signature", None)
        if not isinstance(sig, Signature):
            sig = signature_from_table(
                table.get("signature"), "[python.signature]", DEFAULT_SIGNATURE
            )
        if sig is None:
            raise InvalidConfigError(
                f"{target!r} declares no signature: give the class a `signature` attribute "
                f"(a keepwarm.signature.Signature) or add [python.signature] with inputs "
                f"and outputs to {directory / CONFIG}"
            )
        check_signature(signature, sig.name, f"the Python model {target!r}")
        for kind, specs in (("input", sig.inputs), ("output", sig.outputs)):
            names = [spec.name for spec in specs]
            for name in sorted({n for n in names if names.count(n) > 1}):
                raise InvalidConfigError(  # loaded, it refused every request
                    f"the Python model {target!r} declares the {kind} name {name!r} twice"
                )
        return PythonModel(instance, sig, files_nbytes(directory))


def wrap_outputs(result: Any, names: list[str]) -> dict[str, np.ndarray]:
    """A user's predict result as a dict of arrays: a dict, or one array for one output."""
    if isinstance(result, Mapping):
        return {key: np.asarray(value) for key, value in result.items()}
    if len(names) == 1 and result is not None:
        return {names[0]: np.asarray(result)}
    raise InternalError(
        f"predict returned {type(result).__name__}; expected a dict of "
        f"output name to array ({', '.join(names)})"
    )


class PythonModel:
    def __init__(self, instance: Any, signature: Signature, nbytes: int) -> None:
        self._instance = instance
        self._predict = instance.predict
        self._names = [spec.name for spec in signature.outputs]
        self._outputs = signature.outputs
        self._what = f"the Python model {type(instance).__qualname__!r}"
        self.signature = signature
        self.nbytes = nbytes
        self.nbytes_source = "files"

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self._predict(inputs)
        if type(result) is not dict or not all(type(v) is np.ndarray for v in result.values()):
            result = wrap_outputs(result, self._names)
        return checked_outputs(result, self._outputs, self._what)

    def close(self) -> None:
        instance, self._instance, self._predict = self._instance, None, closed
        close = getattr(instance, "close", None)
        if callable(close):
            close()
