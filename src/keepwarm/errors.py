"""One error hierarchy. Codes are transport-neutral; each transport maps them in one place."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class Code(StrEnum):
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    NOT_FOUND = "NOT_FOUND"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    INTERNAL = "INTERNAL"


class KeepwarmError(Exception):
    """Base of every error keepwarm raises on purpose."""

    code: Code = Code.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInputError(KeepwarmError, ValueError):
    """Bad input: which input, what was expected, what was given."""

    code = Code.INVALID_ARGUMENT


class InvalidConfigError(KeepwarmError, ValueError):
    """A model configuration (model.toml, options) that cannot be used."""

    code = Code.INVALID_ARGUMENT


class ModelNotFoundError(KeepwarmError, LookupError):
    """Unknown model, version, label or signature; says what was tried and what exists."""

    code = Code.NOT_FOUND


class ModelLoadError(KeepwarmError):
    """A model was found but could not be loaded; the format and the cause are kept."""

    code = Code.UNAVAILABLE

    def __init__(self, message: str, *, format: str | None = None) -> None:
        super().__init__(message)
        self.format = format


class UnsafeFormatError(ModelLoadError):
    """A format that runs code when loaded, refused without ``options={"allow_unsafe": True}``
    (or ``Repository(..., allow_unsafe=True)``)."""

    code = Code.INVALID_ARGUMENT


class DownloadError(ModelLoadError):
    """A remote model could not be fetched or failed verification."""


class ResourceExhaustedError(KeepwarmError):
    """No room in the memory budget before the deadline."""

    code = Code.RESOURCE_EXHAUSTED


class UnavailableError(KeepwarmError):
    """Not ready, draining, or shutting down; worth retrying later."""

    code = Code.UNAVAILABLE


class DeadlineExceededError(KeepwarmError, TimeoutError):
    """The caller's deadline passed."""

    code = Code.DEADLINE_EXCEEDED


class PayloadTooLargeError(KeepwarmError):
    code = Code.PAYLOAD_TOO_LARGE


class UnauthenticatedError(KeepwarmError):
    code = Code.UNAUTHENTICATED


class PermissionDeniedError(KeepwarmError):
    code = Code.PERMISSION_DENIED


class InternalError(KeepwarmError):
    code = Code.INTERNAL


class ConversionError(ModelLoadError):
    """A model could not be converted or quantized (``keepwarm optimize``); the cause is kept."""


class GateError(KeepwarmError):
    """An optimized model changes answers past a limit of the gate; names the failed limits.
    Nothing is published. ``report`` is the full agreement report."""

    code = Code.INVALID_ARGUMENT

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report


def escaped(model: str, exc: BaseException) -> InternalError:
    """The error of the requests whose model raised ``exc``, a ``BaseException`` that is
    not an ``Exception`` (``sys.exit()`` in a Python model, ``GeneratorExit``, a
    ``KeyboardInterrupt`` it raised itself): answered like any other failure of the
    model; the thread that ran it, and the server, go on."""
    return InternalError(f"model {model!r} failed: {type(exc).__name__}: {exc}")
