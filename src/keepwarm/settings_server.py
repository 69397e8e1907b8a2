"""``ServerSettings``: the section of ``Settings`` for ``keepwarm serve`` (ports, bodies,
TLS, the management API, server processes, the priority of model threads, and each
connection's limits), with its bounds. ``keepwarm.settings_sections`` holds the other
sections and lists them all."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keepwarm.errors import InvalidConfigError
from keepwarm.settings_fields import KiB, MiB, normalise, parsed_by
from keepwarm.settings_values import (
    bounded_bytes,
    choice,
    integer,
    number,
    optional_path,
    optional_text,
    parse_bool,
    size,
    text,
)

#: The most ``server.processes`` allowed anywhere (the supervisor also refuses more than
#: four per core of the machine it runs on).
MAX_PROCESSES = 64
#: The longest a connection's limits (``server.*_timeout``) may be: one day.
MAX_TIMEOUT = 86400.0


def _seconds() -> dict[str, Any]:
    return parsed_by(number(0, above=True, maximum=MAX_TIMEOUT))


@dataclass(frozen=True)
class ServerSettings:
    """The server (``keepwarm serve``). Ports may be 0 (any free port). ``max_body_bytes``
    bounds request bodies, also after decompression. ``management_token`` is read only from
    the environment (``KEEPWARM_MANAGEMENT_TOKEN``), never from a file or shown.
    ``processes``: server processes sharing the ports (``keepwarm.supervisor``); 1 is one
    process, no supervisor. ``model_nice``: the threads that run models run at this nice
    value above the server's (``keepwarm.thread_priority``; Linux), under ``model_policy``
    (``normal``, ``batch``, ``idle``): the event loop then takes a core from them at once.
    Off (0, ``normal``) by default: a lowered model also yields to the machine's other work
    (MobileNetV2 under overload on 2 shared cores: 503s' p99 120 -> 84 ms at 19, but 0.73x
    the requests served; at the issue's overload cell's rate, 19, ``idle`` and ``batch`` +
    19 cut it in one run of two and cost 0.6-0.9x of its throughput at 32 clients).
    ``model_priority_scope``: which model threads are lowered: ``all`` (the runtime's
    pools and the batch executor's threads) or ``runtime`` (the runtime's pools only; the
    executor's threads, which run Python between the runtime's calls, keep the server's;
    at 19, the overload cell's 503s' p99 22 -> 11 ms at 4x, 0.92-0.98x the throughput at
    32 clients on the shared machine).

    A connection's limits (``keepwarm.http.timers``): closed when idle for
    ``keep_alive_timeout`` seconds (also before its first request); 408 to a header block
    not whole ``header_timeout`` seconds after its first byte, or to a body from which no
    byte came for ``body_timeout`` seconds; 431 to a header block over
    ``max_header_bytes`` (1 KiB to 16 MiB); dropped when its answers cannot be sent (the
    client reads none of them) for ``write_timeout`` seconds. Timeouts are above 0 and at
    most a day."""

    host: str = field(default="127.0.0.1", metadata=parsed_by(text))
    http_port: int = field(default=8501, metadata=parsed_by(integer(0, 65535)))
    grpc_port: int = field(default=8500, metadata=parsed_by(integer(0, 65535)))
    max_body_bytes: int = field(default=64 * MiB, metadata=parsed_by(bounded_bytes))
    max_json_depth: int = field(default=64, metadata=parsed_by(integer(1)))
    request_timeout_ms: float | None = field(
        default=None, metadata=parsed_by(number(0, above=True, optional=True))
    )
    management_api: bool = field(default=False, metadata=parsed_by(parse_bool))
    management_token: str | None = field(
        default=None, repr=False, metadata=parsed_by(optional_text, secret=True)
    )
    token_file: Path | None = field(default=None, metadata=parsed_by(optional_path))
    tls_cert: Path | None = field(default=None, metadata=parsed_by(optional_path))
    tls_key: Path | None = field(default=None, metadata=parsed_by(optional_path))
    model_control: str = field(default="poll", metadata=parsed_by(choice("poll", "explicit")))
    strict_readiness: bool = field(default=False, metadata=parsed_by(parse_bool))
    processes: int = field(default=1, metadata=parsed_by(integer(1, MAX_PROCESSES)))
    model_nice: int = field(default=0, metadata=parsed_by(integer(0, 19)))
    model_policy: str = field(
        default="normal", metadata=parsed_by(choice("normal", "batch", "idle"))
    )
    model_priority_scope: str = field(default="all", metadata=parsed_by(choice("all", "runtime")))
    keep_alive_timeout: float = field(default=5.0, metadata=_seconds())
    header_timeout: float = field(default=30.0, metadata=_seconds())
    body_timeout: float = field(default=30.0, metadata=_seconds())
    max_header_bytes: int = field(default=64 * KiB, metadata=parsed_by(size(1 * KiB, 16 * MiB)))
    write_timeout: float = field(default=30.0, metadata=_seconds())

    def __post_init__(self) -> None:
        normalise(self, "server")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InvalidConfigError(
                "server.tls_cert and server.tls_key: expected both or neither, got only "
                + ("tls_cert" if self.tls_key is None else "tls_key")
            )
        if self.http_port == self.grpc_port != 0:
            raise InvalidConfigError(
                f"server.http_port and server.grpc_port are both {self.http_port}: expected "
                "two different ports (or 0 for any free one)"
            )
