"""A loopback keep-alive HTTP/1.1 server for the load clients' tests: every POST is read
whole and answered ``ok`` with a Content-Length, after the delay its path is given (none
by default) and with its path's status (200 by default)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from support.http_server import serving


@contextmanager
def paced_server(
    delays: dict[str, float] | None = None, statuses: dict[str, int] | None = None
) -> Iterator[str]:
    """The server's base URL while it runs. A client closing its connection is not an
    error; any other exception in a handler fails the block when it ends."""
    delays, statuses = delays or {}, statuses or {}
    failed: list[BaseException] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # the head and the body go out without a wait

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(delays.get(self.path, 0.0))
            self.send_response(statuses.get(self.path, 200))
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128  # every client's connections accepted at once

        def handle_error(self, request: Any, client_address: Any) -> None:
            import sys

            error = sys.exc_info()[1]
            if error is not None and not isinstance(error, ConnectionError):
                failed.append(error)

    httpd = Server(("127.0.0.1", 0), Handler)
    with serving(httpd):
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    if failed:
        raise failed[0]
