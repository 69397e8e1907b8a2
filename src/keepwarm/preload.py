"""TensorFlow's native libraries loaded on a thread at ``keepwarm serve``'s start, while the
interpreter goes on importing and starting the server (issue 7: cold start).

``import tensorflow`` spends a large part of its time in the dynamic loader: relocating
``libtensorflow_cc`` and ``libtensorflow_framework`` (over a GiB of code) and running their
static initialisers (op and kernel registrations). The import machinery does that holding
the GIL, so nothing else in the process runs meanwhile. Called here through ``ctypes``,
``dlopen`` runs without the GIL: on a second core, at the same time as the server's own
imports. When the first load imports TensorFlow, its extension module's ``dlopen`` finds
both libraries already loaded (the same files, loaded with the flags the import uses:
``RTLD_NOW``, local), and only the Python side of the import is left.

The dynamic loader holds its lock during ``dlopen``: an extension module imported on
another thread meanwhile waits for it (GIL held). Importing the server's extension modules
before the preload, so that only pure Python ran beside it, measured slower in an
interleaved A/B (session 17), and was taken out. Tried again with the extension modules
alone first (session 23: ``_hashlib``, imported through ``hmac``, had held the GIL for
0.29 s of a 0.34 s preload): TensorFlow's import then started up to 0.15 s earlier on a
quiet machine, but the ``dlopen`` beside the main thread's Python took up to 2.5x as long
on a loaded one, and cold starts A/B'd 0.96-1.05x wall and 1.00-1.02x CPU (4 runs): not
kept.

Done only when it will be used: on Linux, TensorFlow installed, and the repository a local
directory holding a SavedModel or a Keras file (scanned to three levels: ``REPO/MODEL/
VERSION/``), with ``[workers] isolate`` off (isolated models load TensorFlow in their own
processes, and this one should not hold its pages). Any failure leaves the import to do
everything as before.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

_log = logging.getLogger("keepwarm.preload")
#: TensorFlow's shared libraries, in the order the loader needs them (``_cc`` needs the
#: framework library), relative to the ``tensorflow`` package directory.
TENSORFLOW_LIBRARIES = ("libtensorflow_framework.so.2", "libtensorflow_cc.so.2")
#: Files that mean TensorFlow loads the model: a SavedModel, or a Keras file.
TENSORFLOW_FILES = ("saved_model.pb", "saved_model.pbtxt")
TENSORFLOW_SUFFIXES = (".keras", ".h5", ".hdf5")
_DEPTH = 3
_MAX_ENTRIES = 10_000  # a huge directory is not scanned to the end: no preload then


def holds_tensorflow_models(root: str | os.PathLike[str]) -> bool:
    """Whether the local directory ``root`` holds a SavedModel or a Keras file within
    three levels (the repository itself, a model, a version); False for a URI or a file."""
    seen = 0
    level: list[str] = [os.fspath(root)]
    for _ in range(_DEPTH + 1):
        below: list[str] = []
        for directory in level:
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            seen += len(entries)
            if seen > _MAX_ENTRIES:
                return False
            for entry in entries:
                name = entry.name
                if name in TENSORFLOW_FILES or name.lower().endswith(TENSORFLOW_SUFFIXES):
                    return True
                if not name.startswith(".") and _is_dir(entry):
                    below.append(entry.path)
        level = below
    return False


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a directory this process may not read: not a model of its own
        return False


def tensorflow_libraries() -> list[Path]:
    """The installed TensorFlow's native libraries (``TENSORFLOW_LIBRARIES`` that exist),
    found without importing it; empty when it is not installed."""
    try:
        spec = importlib.util.find_spec("tensorflow")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    package = Path(next(iter(spec.submodule_search_locations)))
    return [package / name for name in TENSORFLOW_LIBRARIES if (package / name).is_file()]


def _dlopen() -> Callable[[bytes, int], int | None]:
    """``dlopen`` as a ``ctypes`` foreign function: called through it, the GIL is released."""
    try:
        function = ctypes.CDLL(None).dlopen
    except AttributeError:  # glibc before 2.34 keeps it in libdl
        function = ctypes.CDLL("libdl.so.2").dlopen
    function.restype = ctypes.c_void_p
    function.argtypes = (ctypes.c_char_p, ctypes.c_int)
    return function


def load_libraries(paths: Sequence[Path]) -> list[Path]:
    """``dlopen`` each of ``paths`` (``RTLD_NOW``, local, as Python's import does) without
    the GIL; the ones that loaded. They stay loaded for the life of the process."""
    dlopen = _dlopen()
    loaded = []
    for path in paths:
        if not dlopen(os.fsencode(path), os.RTLD_NOW):
            _log.debug("preloading %s failed; the import will load it", path)
            break  # the next library needs this one
        loaded.append(path)
    return loaded


def preload_tensorflow(root: str, *, isolate: bool = False) -> threading.Thread | None:
    """Start loading TensorFlow's native libraries on a daemon thread when the repository
    at ``root`` will import TensorFlow in this process (see the module's docstring); the
    thread, or None when nothing was started."""
    if not sys.platform.startswith("linux") or isolate or not holds_tensorflow_models(root):
        return None
    paths = tensorflow_libraries()
    if not paths:
        return None

    def run() -> None:
        try:
            load_libraries(paths)
        except (OSError, AttributeError) as exc:  # no dlopen here: the import does it all
            _log.debug("preloading TensorFlow's libraries failed: %s", exc)

    thread = threading.Thread(target=run, name="keepwarm-preload", daemon=True)
    thread.start()
    return thread


def finish_preload(thread: threading.Thread | None) -> None:
    """Wait for the preload started by :func:`preload_tensorflow` (``thread``; None: none
    was) to end, before the process may exit. The exit runs the libraries' static
    destructors (registered as their initialisers ran), then takes the dynamic loader's
    lock to unload them: with a ``dlopen`` still running the initialisers, these work on
    destroyed tables (a spin was seen) and the lock is never given back, and the process
    hangs with its last line printed. Seen 1 run in 6 with a Ctrl-C early in the start
    (``tests/e2e/test_server_early_signals.py``). A ``dlopen`` ends in seconds."""
    if thread is not None:
        thread.join()


__all__ = [
    "finish_preload",
    "holds_tensorflow_models",
    "load_libraries",
    "preload_tensorflow",
    "tensorflow_libraries",
]
