"""Exceptions raised in a worker process, raised again in the server."""

from __future__ import annotations

import builtins

from keepwarm import errors
from keepwarm.errors import KeepwarmError, ModelLoadError
from keepwarm.workers.messages import Failed


class RemoteError(Exception):
    """An exception raised in a worker whose type is not a builtin or keepwarm's own:
    ``type_name`` is the name of its type there."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name


def rebuilt(failed: Failed) -> Exception:
    """The exception a worker reported, as its own type where that is keepwarm's or a
    builtin, else a ``RemoteError`` carrying its type's name; the worker's traceback is
    attached as a note."""
    exc: Exception
    home = errors if failed.module == "keepwarm.errors" else builtins
    kind = getattr(home, failed.type_name, None)
    if isinstance(kind, type) and issubclass(kind, ModelLoadError):
        exc = kind(failed.message, format=failed.format)
    elif isinstance(kind, type) and issubclass(kind, KeepwarmError):
        exc = kind(failed.message)
    elif failed.module == "builtins" and isinstance(kind, type) and issubclass(kind, Exception):
        try:
            exc = kind(failed.message)
        except TypeError:
            exc = RemoteError(failed.type_name, failed.message)
    else:
        exc = RemoteError(failed.type_name, failed.message)
    if failed.traceback:
        exc.add_note(f"in the worker process:\n{failed.traceback}")
    return exc
