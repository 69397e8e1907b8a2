"""What leaves the service as an error message: files named relative to the repository
root (never by absolute path), and a framework's exceptions turned into typed errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from keepwarm.errors import InternalError, InvalidInputError, KeepwarmError


class Scrubber:
    def __init__(self, root: str) -> None:
        self._roots = _root_spellings(root)

    def translated(self, name: str, exc: Exception) -> KeepwarmError:
        # A framework's own refusal of an input the signature allowed (say, a wrong size
        # on an axis the signature leaves open) is the caller's error; anything else a bug.
        text = self.public(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        # A worker process's exception of a type this process lacks carries its name.
        kind = getattr(exc, "type_name", None) or type(exc).__name__
        if kind in ("InvalidArgumentError", "InvalidArgument", "Fail"):
            return InvalidInputError(f"model {name!r} refused the input: {text}")
        return InternalError(f"model {name!r} failed: {kind}: {text}")

    def mapped(self, name: str, passing: tuple[type[Exception], ...] = ()) -> _Mapped:
        """A context manager: errors leave its block as the service's own: typed ones
        scrubbed of absolute paths, a framework's translated (model ``name``); ``passing``
        ones untouched."""
        return _Mapped(self, name, passing)

    def scrubbed(self, exc: KeepwarmError) -> KeepwarmError:
        message = self.public(exc.message)
        if message != exc.message:
            exc.message = message
            exc.args = (message,)
        return exc

    def public(self, text: str) -> str:
        """``text`` with the repository root's absolute path replaced: files are named
        relative to the root, the root itself as "the repository"."""
        for root in self._roots:
            text = text.replace(root + os.sep, "").replace(root, "the repository")
        return text


class _Mapped:
    """``Scrubber.mapped``'s block (a class, not a generator: it is on every request)."""

    __slots__ = ("_name", "_passing", "_scrubber")

    def __init__(self, scrubber: Scrubber, name: str, passing: tuple[type[Exception], ...]) -> None:
        self._scrubber = scrubber
        self._name = name
        self._passing = passing

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if isinstance(exc, KeepwarmError):
            raise self._scrubber.scrubbed(exc) from None
        if not isinstance(exc, Exception) or isinstance(exc, self._passing):
            return  # none, a BaseException, or one to pass untouched
        raise self._scrubber.translated(self._name, exc) from None


def _root_spellings(root: str) -> list[str]:
    """The root's absolute spellings, as given and resolved, longest first (the most
    specific is replaced before a prefix of it). A relative spelling ("." or "models") is
    not one: it would match ordinary words."""
    if "://" in root and not root.startswith("file://"):
        return [root.rstrip("/")]
    path = Path(root.removeprefix("file://")).expanduser()
    spellings = {str(path.absolute()), str(path.resolve())}
    return sorted(
        (s.rstrip(os.sep) for s in spellings if s not in ("", os.sep)), key=len, reverse=True
    )
