"""Routes: a path is split into segments (percent-escapes decoded per segment, so an
escaped ``/`` stays inside its segment and is refused as a name) and matched against
patterns of literals and ``{placeholders}``. TF Serving's ``:predict`` verb is split off
the last segment."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import unquote

from keepwarm.http.messages import Request, Response

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: str  # e.g. "/v2/models/{model}/versions/{version}/infer"; ":predict" verbs too
    handler: Handler
    protocol: str  # "v2", "tfserving", "server": for metrics, and for the OpenAPI test

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(_split(self.pattern))


class Router:
    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes
        # Each pattern split once, here, not at every request.
        self._by_length: dict[int, list[tuple[Route, tuple[str, ...]]]] = {}
        for route in routes:
            segments = route.segments
            self._by_length.setdefault(len(segments), []).append((route, segments))

    def match(
        self, method: str, raw_path: bytes
    ) -> tuple[Route | None, dict[str, str], tuple[str, ...]]:
        """The route and its parameters; without one, the methods the path takes (a 405's
        ``Allow``; HEAD beside GET), if any."""
        parts = _split(raw_path.decode("latin-1"))
        segments = [unquote(p, errors="strict") if "%" in p else p for p in parts]
        allowed: list[str] = []
        for route, pattern in self._by_length.get(len(segments), ()):
            params = _bind(pattern, segments)
            if params is None:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, params, ()
            allowed += ["GET", "HEAD"] if route.method == "GET" else [route.method]
        return None, {}, tuple(dict.fromkeys(allowed))


def _split(path: str) -> list[str]:
    parts = path.strip("/").split("/") if path.strip("/") else []
    if parts and parts[0] == "v1" and ":" in parts[-1]:
        head, verb = parts[-1].rsplit(":", 1)
        parts = [*parts[:-1], head, ":" + verb]
    return parts


def _bind(pattern: tuple[str, ...], segments: list[str]) -> dict[str, str] | None:
    params: dict[str, str] = {}
    for want, got in zip(pattern, segments, strict=True):
        if want.startswith("{"):
            if got.startswith(":"):
                return None
            params[want[1:-1]] = got
        elif want != got:
            return None
    return params
