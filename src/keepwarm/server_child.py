"""One server process of several (``server.processes`` > 1), started by
``keepwarm.supervisor`` (``CHILD_COMMAND``): the whole server
(``keepwarm.server.serve``) on the REST socket the supervisor made, and a private unix
socket on which it gives its ``/metrics`` exposition to the process that answers a scrape,
which merges every process's (``keepwarm.metrics_merge``).

Its ``ChildSpec`` arrives pickled on stdin (the settings are parsed once, by the
supervisor, and the child reads no environment for them); the REST socket is inherited as
a file descriptor."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keepwarm import early_signals
from keepwarm.settings import Settings

PEER_TIMEOUT_SECONDS = 5.0
#: Run by the supervisor with ``sys.executable`` (not ``-m``: the pickled ``ChildSpec``
#: must be this module's class, not ``__main__``'s). SIGINT kills it quietly until
#: ``main`` has its handlers in place (the supervisor counts that as stopped): Python's
#: own handler would print a KeyboardInterrupt traceback from the middle of an import.
CHILD_COMMAND = (
    "-c",
    "import signal; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "from keepwarm.server_child import main; raise SystemExit(main())",
)


@dataclass(frozen=True)
class ChildSpec:
    """``index`` of ``count`` processes; ``http_fd``: the inherited REST socket; ``peers``:
    the directory of every process's metrics socket (``<index>.sock``); ``parent``: the
    supervisor's pid (the child exits if it is gone); ``late``: a restart, which accepts
    connections only once ready (the others serve meanwhile)."""

    root: str
    settings: Settings
    index: int
    count: int
    http_fd: int
    peers: str
    parent: int
    late: bool = False


def peer_path(peers: str, index: int) -> Path:
    return Path(peers) / f"{index}.sock"


class ChildRole:
    """What ``serve`` does differently in a process of several: serve on ``sockets``,
    answer its siblings' metrics requests, merge theirs into its own ``/metrics``."""

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.sockets = [socket.socket(fileno=spec.http_fd)]

    async def start(self, service: Any) -> Callable[[], Awaitable[None]]:
        """Listen for siblings; returns what stops it."""
        path = peer_path(self.spec.peers, self.spec.index)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by this index's previous process, which died

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                writer.write(await service.metrics.render_off_loop())
                await writer.drain()
            finally:
                writer.close()

        server = await asyncio.start_unix_server(answer, os.fspath(path))
        service.metrics.merge = self.merged

        async def stop() -> None:
            service.metrics.merge = None
            server.close()
            await server.wait_closed()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

        return stop

    async def until_ready(self, service: Any, stop: asyncio.Event) -> None:
        """Until ``service`` is ready (or the server is stopping)."""
        while not service.ready() and not stop.is_set():
            await asyncio.sleep(0.05)

    async def merged(self, own: bytes) -> bytes:
        """The whole server's exposition: ``own`` and every sibling that answers in time."""
        from keepwarm.metrics_merge import merge_expositions

        spec = self.spec
        others = [i for i in range(spec.count) if i != spec.index]
        bodies = await asyncio.gather(*(self._fetch(i) for i in others))
        expositions = {spec.index: own}
        expositions.update((i, body) for i, body in zip(others, bodies, strict=True) if body)
        return await asyncio.to_thread(merge_expositions, expositions, spec.count)

    async def _fetch(self, index: int) -> bytes | None:
        """A sibling's exposition, or None when it does not answer (restarting, gone)."""
        path = os.fspath(peer_path(self.spec.peers, index))
        try:
            async with asyncio.timeout(PEER_TIMEOUT_SECONDS):
                reader, writer = await asyncio.open_unix_connection(path)
                try:
                    return await reader.read()
                finally:
                    writer.close()
        except (OSError, TimeoutError):
            return None


def die_with_parent(parent: int) -> None:
    """SIGTERM this process when the process ``parent`` (the supervisor; the one running
    a conversion) dies, also killed with SIGKILL, which cannot stop its children: no
    server is left holding the port, no conversion left running for no one."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # died before prctl took effect
        raise SystemExit(1)


def main() -> int:
    # The supervisor passes SIGTERM and SIGINT on at once, also while this process starts:
    # until the server's own handlers are in place they end the start as a single
    # server's do (SIGTERM: exit 0, SIGINT: 130), not with a traceback; a swallowed one is
    # raised again there (keepwarm.early_signals, keepwarm.server).
    restore = early_signals.install()
    try:
        return early_signals.exit_code(_serve)
    finally:
        restore()


def _serve() -> int:
    spec = pickle.loads(sys.stdin.buffer.read())
    assert isinstance(spec, ChildSpec)
    die_with_parent(spec.parent)
    from keepwarm.server import serve

    return serve(spec.root, spec.settings, child=ChildRole(spec))
