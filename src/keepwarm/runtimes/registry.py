"""The runtime registry: built-ins and third-party runtimes, through entry points."""

from __future__ import annotations

import logging
import threading
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from keepwarm.errors import InvalidConfigError, ModelLoadError
from keepwarm.runtimes.base import Runtime

GROUP = "keepwarm.runtimes"
_BUILTIN = {
    "savedmodel": "keepwarm.runtimes.savedmodel:SavedModelRuntime",
    "keras": "keepwarm.runtimes.keras:KerasRuntime",
    "onnx": "keepwarm.runtimes.onnx:OnnxRuntime",
    "python": "keepwarm.runtimes.python:PythonRuntime",
    "pickle": "keepwarm.runtimes.pickled:PickleRuntime",
}
_log = logging.getLogger("keepwarm.runtimes")
_lock = threading.Lock()
_runtimes: dict[str, Runtime] | None = None


def _load_target(target: str) -> Runtime:
    module_name, _, attr = target.partition(":")
    module = __import__(module_name, fromlist=[attr])
    runtime: Runtime = getattr(module, attr)()
    return runtime


def _load_entry_point(ep: EntryPoint) -> Runtime | None:
    """The runtime an entry point names, or None (logged) when it cannot be loaded: one
    broken third-party package must not stop every other runtime from working."""
    try:
        runtime: Runtime = ep.load()()
    except Exception as exc:
        _log.warning(
            "skipping runtime entry point %r (%s): %s: %s",
            ep.name,
            ep.value,
            type(exc).__name__,
            exc,
        )
        return None
    return runtime


def _all() -> dict[str, Runtime]:
    global _runtimes
    with _lock:
        if _runtimes is None:
            found = {name: _load_target(target) for name, target in _BUILTIN.items()}
            for ep in entry_points(group=GROUP):
                if ep.name not in found:
                    runtime = _load_entry_point(ep)
                    if runtime is not None:
                        found[ep.name] = runtime
            _runtimes = found
        return _runtimes


def register(runtime: Runtime) -> None:
    """Add a runtime at run time (entry points are the usual way)."""
    _all()[runtime.name] = runtime


def runtime_names() -> list[str]:
    return sorted(_all())


def get_runtime(name: str) -> Runtime:
    runtimes = _all()
    if name not in runtimes:
        raise InvalidConfigError(
            f"unknown runtime {name!r}; known runtimes: {', '.join(sorted(runtimes))}"
        )
    return runtimes[name]


def detect_runtime(path: Path) -> Runtime:
    """The runtime whose format ``path`` holds; ``ModelLoadError`` listing what was looked for."""
    for runtime in sorted(_all().values(), key=lambda r: r.priority):
        if runtime.detect(path):
            return runtime
    archive = ""
    if path.name.lower().endswith((".tar.gz", ".tgz")):  # only http(s) archives are unpacked
        archive = "; a local archive is not unpacked: extract it, or load it over http(s)://"
    raise ModelLoadError(
        f"no runtime recognises {path}: expected a SavedModel directory (saved_model.pb), "
        "a Keras file (.keras, .h5), an ONNX file (.onnx), a directory holding one of these, "
        "or a Python model (keepwarm.toml naming a class); "
        f"runtimes: {', '.join(sorted(_all()))}{archive}"
    )
