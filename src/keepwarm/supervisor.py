"""``keepwarm serve`` with ``server.processes`` = N > 1: a supervisor and N server
processes, each the whole server (its own repository, models and batchers), so that N
event loops and N interpreters' GILs serve one port.

The supervisor imports no framework and serves nothing. It makes the REST listening
sockets (one per process, all bound to one port with ``SO_REUSEPORT``, so the kernel
spreads new connections over them; port 0 picks one port for all) and keeps them open:
the connections queued on a process's socket while it restarts wait for its successor
instead of being refused. gRPC servers bind the gRPC port themselves (grpcio sets
``SO_REUSEPORT``); with port 0 the supervisor reserves one first. Each process is started
with ``keepwarm.server_child.CHILD_COMMAND`` (a new interpreter, never a fork), in a process
group of its own (a terminal's Ctrl-C reaches the supervisor alone, which passes it on
once).

The supervisor prints the addresses once, each process's pid and readiness, and ``ready
at`` when every process is ready. SIGTERM or SIGINT is passed to every process, which
drains as a single server does; the supervisor exits 0 when all have exited 0. A process
that dies otherwise is started again after a backoff (1 s, doubling to 30 s; back to 1 s
after a minute alive); the others serve meanwhile. A process that fails before the server
was first ready stops the whole server (a start-up error, such as a bad setting)."""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from typing import IO, Any

from keepwarm.early_signals import raise_pending
from keepwarm.errors import InvalidConfigError
from keepwarm.server_child import CHILD_COMMAND, ChildSpec
from keepwarm.settings import Settings, tensorflow_intra_threads
from keepwarm.supervisor_output import Output

BACKOFF_FIRST, BACKOFF_MAX, STEADY_SECONDS = 1.0, 30.0, 60.0


def supervise(root: str, settings: Settings) -> int:
    """Run ``settings.server.processes`` server processes until SIGTERM or SIGINT."""
    check_processes(settings)
    count = settings.server.processes
    listeners = listening_sockets(settings.server.host, settings.server.http_port, count)
    grpc_hold, grpc_port = hold_grpc_port(settings.server.host, settings.server.grpc_port)
    each = child_settings(settings, listeners[0].getsockname()[1], grpc_port)
    tensorflow_intra_threads(count)  # the cores divided among the processes' TensorFlow
    with tempfile.TemporaryDirectory(prefix="keepwarm-peers-") as peers:
        children = [
            _Child(ChildSpec(root, each, i, count, sock.fileno(), peers, os.getpid()))
            for i, sock in enumerate(listeners)
        ]
        try:
            return _Supervisor(children, Output(sys.stderr, count)).run()
        finally:
            for sock in listeners:
                sock.close()
            if grpc_hold is not None:
                grpc_hold.close()


def child_settings(settings: Settings, http_port: int, grpc_port: int) -> Settings:
    """One process's settings: one process, the ports chosen, its share of the memory
    budget (each process holds its own copy of the models)."""
    budget = settings.budget.max_bytes
    return settings.override(
        server__processes=1,
        server__http_port=http_port,
        server__grpc_port=grpc_port,
        budget__max_bytes=None if budget is None else max(1, budget // settings.server.processes),
    )


def check_processes(settings: Settings) -> None:
    """Refuse what several processes cannot do (yet) or a count this machine cannot run."""
    server = settings.server
    cores = os.cpu_count() or 1
    if server.processes > 4 * cores:
        raise InvalidConfigError(
            f"server.processes={server.processes}: expected at most 4 per core "
            f"({4 * cores} here): each process holds its own copy of every model"
        )
    if server.management_api or server.model_control == "explicit":
        raise InvalidConfigError(
            f"server.processes={server.processes}: the repository management API "
            "(--management-api, --model-control explicit) would load or unload in one "
            "process of several; it needs --processes 1"
        )


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` TCP sockets listening on ``host:port`` with ``SO_REUSEPORT`` (port 0: the
    first picks a free port, the others take the same)."""
    family, address = _address(host, port, "http_port")
    if port != 0:
        _check_free(family, address, f"server.http_port {port} on {host}")
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            sock.listen(2048)
            sock.set_inheritable(True)
            address = (address[0], sock.getsockname()[1], *address[2:])
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise InvalidConfigError(f"server.http_port {port} on {host}: {exc}") from None
    return sockets


def _address(host: str, port: int, setting: str) -> tuple[socket.AddressFamily, Any]:
    """The family and socket address to bind ``host:port``; a host that does not resolve
    is an error naming it."""
    try:
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except OSError as exc:
        raise InvalidConfigError(f"server.{setting} {port} on {host}: {exc}") from None
    return family, address


def _check_free(family: socket.AddressFamily, address: Any, what: str) -> None:
    """Refuse a port another socket holds, also one bound with ``SO_REUSEPORT``: the
    sockets of this server set it too, and would share the port with a second server
    started by mistake (which would take half of the connections). A socket without it
    cannot bind a port held by any other."""
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is free
        probe.bind(address)
    except OSError as exc:
        raise InvalidConfigError(f"{what}: {exc}") from None
    finally:
        probe.close()


def hold_grpc_port(host: str, port: int) -> tuple[socket.socket | None, int]:
    """Port 0: a free port, held by a bound (not listening) ``SO_REUSEPORT`` socket until
    the supervisor exits, so that every process binds the same one. A port given is
    checked free first (the processes bind it with ``SO_REUSEPORT``)."""
    family, address = _address(host, port, "grpc_port")
    if port != 0:
        _check_free(family, address, f"server.grpc_port {port} on {host}")
        return None, port
    hold = socket.socket(family, socket.SOCK_STREAM)
    hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    hold.bind(address)
    return hold, int(hold.getsockname()[1])


class _Child:
    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.restart_at = 0.0
        self.backoff = BACKOFF_FIRST
        self.signalled = False
        self.sent: int | None = None  # the first signal passed on to this process, if any
        self.starting = False  # it was not yet ready when the signal was passed on
        self.relay: threading.Thread | None = None

    def start(self, output: Output) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, *CHILD_COMMAND],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(self.spec.http_fd,),
            process_group=0,
        )
        self.started = time.monotonic()
        self.signalled = False
        self.sent = None
        output.started(self.spec.index, self.proc.pid)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.relay = _relay(output, self.spec.index, self.proc.pid, self.proc.stdout)
        try:
            self.proc.stdin.write(pickle.dumps(self.spec))
            self.proc.stdin.close()
        except BrokenPipeError:  # it died at once: seen as an exit
            pass

    def signal(self, signum: int, output: Output) -> None:
        """Pass ``signum`` on. To a process not yet ready, SIGINT goes as SIGTERM, and a
        second signal as SIGKILL: in its interpreter's own start-up a SIGINT is a
        KeyboardInterrupt raised inside the initialisation ("Fatal Python error" printed
        under the supervisor's lines), where SIGTERM ends it quietly at any point and its
        handlers, once in place, stop it as they stop a server; ``exit_code`` reports it
        as stopped by the SIGINT the supervisor was given."""
        if self.proc is not None and self.proc.poll() is None:
            self.signalled = True
            first = self.sent is None
            if first:
                self.sent = signum
                self.starting = self.spec.index not in output.ready
            if self.starting:
                signum = signal.SIGKILL if not first else signal.SIGTERM
            self.proc.send_signal(signum)

    def exit_code(self, code: int) -> int:
        """``code`` as the server's. A process the signal reached while it started (killed
        by it before its handlers were in place, or stopped by the SIGTERM sent for a
        SIGINT) stopped as a server stopped by the signal given does: SIGTERM 0, SIGINT 130
        (the supervisor exited 241 for -15, 254 for -2)."""
        if self.sent is not None and (code == -self.sent or (self.starting and code != 0)):
            return 130 if self.sent == signal.SIGINT else 0
        if self.starting and self.sent == signal.SIGINT:  # its SIGTERM handler: exit 0
            return 130
        return code


def _relay(output: Output, index: int, pid: int, stream: IO[bytes]) -> threading.Thread:
    def read() -> None:
        for raw in stream:
            output.line(index, pid, raw.decode(errors="replace").rstrip("\n"))
        stream.close()

    thread = threading.Thread(target=read, name=f"keepwarm-relay-{index}", daemon=True)
    thread.start()
    return thread


class _Supervisor:
    def __init__(self, children: list[_Child], output: Output) -> None:
        self.children = children
        self.output = output
        self.stop = threading.Event()
        self.signals: list[int] = []

    def on_signal(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)
        self.stop.set()
        for child in self.children:  # a second SIGINT: the processes exit at once
            child.signal(signum, self.output)

    def run(self) -> int:
        previous = {s: signal.signal(s, self.on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            raise_pending()  # a signal that start-up code swallowed before these handlers
            for child in self.children:
                child.start(self.output)
            failed = self._watch()
            for child in self.children:
                if not child.signalled:  # started while the signal was being passed on
                    child.signal(signal.SIGTERM, self.output)
            codes = [c.exit_code(c.proc.wait()) for c in self.children if c.proc is not None]
            for child in self.children:  # their last lines before ours
                if child.relay is not None:
                    child.relay.join(timeout=5)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        self.output.stopped()
        if failed is not None:
            return failed
        return next((code for code in codes if code != 0), 0)

    def _watch(self) -> int | None:
        """Until a signal: restart the processes that exit. Returns the exit code of one
        that failed before the server was first ready (the server then stops)."""
        while not self.stop.wait(0.1):
            now = time.monotonic()
            for child in self.children:
                if self.stop.is_set():  # a signal came: an exit now is its work, no failure
                    return None
                proc = child.proc
                if proc is not None and (code := proc.poll()) is not None:
                    if not self.output.all_ready_once:
                        self.stop.set()
                        return code if code > 0 else 1  # killed by a signal: -9 exited 247
                    lived = now - child.started
                    child.backoff = BACKOFF_FIRST if lived > STEADY_SECONDS else child.backoff
                    child.restart_at = now + child.backoff
                    self.output.died(child.spec.index, proc.pid, code, child.backoff)
                    child.backoff = min(child.backoff * 2, BACKOFF_MAX)
                    child.proc = None
                    child.spec = replace(child.spec, late=True)
                if child.proc is None and now >= child.restart_at and not self.stop.is_set():
                    child.start(self.output)
        return None


__all__ = [
    "check_processes",
    "child_settings",
    "hold_grpc_port",
    "listening_sockets",
    "supervise",
]
