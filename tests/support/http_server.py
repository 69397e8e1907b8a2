"""A loopback HTTP server for tests: registered routes, a request log, optional gates."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GATE_TIMEOUT_S = 30.0


@dataclass
class Route:
    body: bytes
    status: int = 200
    content_length: int | None = None  # a header value that may lie about the body
    gate: threading.Event | None = None  # the response waits for this, when set


@dataclass
class FakeServer:
    """Serves registered paths (the query is ignored for routing) and records every GET."""

    base: str = ""
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    received: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, path: str, body: bytes, **options: object) -> str:
        self.routes[path] = Route(body, **options)  # type: ignore[arg-type]
        return self.base + path

    def record(self, path: str) -> None:
        with self._lock:
            self.requests.append(path)
        self.received.set()

    def count(self, path: str | None = None) -> int:
        with self._lock:
            return sum(1 for p in self.requests if path is None or p.split("?")[0] == path)


def _handler(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server.record(self.path)
            route = server.routes.get(self.path.split("?")[0])
            if route is None:
                self.send_error(404, "no such model")
                return
            if route.gate is not None:
                route.gate.wait(GATE_TIMEOUT_S)
            self.send_response(route.status)
            length = route.content_length if route.content_length is not None else len(route.body)
            self.send_header("Content-Length", str(length))
            self.send_header("Content-Type", "application/gzip")
            self.end_headers()
            self.wfile.write(route.body)
            self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextmanager
def serving(httpd: ThreadingHTTPServer, poll_interval: float = 0.5) -> Iterator[None]:
    """``httpd`` serving on a thread of its own while the block runs; then shut down, its
    socket closed and the thread joined."""
    thread = threading.Thread(target=httpd.serve_forever, args=(poll_interval,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@contextmanager
def serve() -> Iterator[FakeServer]:
    """A ``FakeServer`` on 127.0.0.1 (a free port), shut down on exit."""
    fake = FakeServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    httpd.daemon_threads = True
    fake.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    with serving(httpd, 0.05):
        try:
            yield fake
        finally:  # a response waiting on a gate must not hold the shutdown up
            for route in fake.routes.values():
                if route.gate is not None:
                    route.gate.set()
