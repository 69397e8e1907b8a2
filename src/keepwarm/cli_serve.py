"""``keepwarm serve [REPO]``: flags become ``Settings`` (flags > ``KEEPWARM_*`` > the
``--config`` file > defaults), then ``keepwarm.server.serve`` runs."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from keepwarm.errors import InvalidConfigError
from keepwarm.settings import Settings
from keepwarm.settings_sections import FIELDS
from keepwarm.settings_values import Expected


def add_serve_command(commands: Any) -> None:
    """Add ``serve`` to the ``keepwarm`` parser's sub-commands."""
    help = "serve a model repository over TF Serving's and KServe v2's REST and gRPC APIs"
    sub = commands.add_parser("serve", help=help, description=help)
    sub.add_argument(
        "repo",
        nargs="?",
        default=".",
        metavar="REPO",
        help="model repository: <model>/<version>/ directories (default: .)",
    )
    sub.add_argument("--config", metavar="FILE", help="server settings file (TOML)")
    net = sub.add_argument_group("network")
    net.add_argument("--host", help="address to bind (default 127.0.0.1)")
    net.add_argument(
        "--http-port",
        "--port",
        dest="http_port",
        type=int,
        metavar="PORT",
        help="REST port (default 8501; 0: any free port)",
    )
    net.add_argument(
        "--grpc-port",
        dest="grpc_port",
        type=int,
        metavar="PORT",
        help="gRPC port, TF Serving's and KServe v2's services (default 8500; 0: any free port)",
    )
    net.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="server processes sharing the ports, each with its own copy of the models "
        "(default 1); --max-bytes is divided among them; no --management-api with N > 1",
    )
    net.add_argument("--tls-cert", metavar="FILE", help="TLS certificate (PEM)")
    net.add_argument("--tls-key", metavar="FILE", help="TLS private key (PEM)")
    net.add_argument("--max-body-bytes", metavar="SIZE", help="request body limit (64MiB)")
    net.add_argument(
        "--request-timeout-ms",
        type=float,
        metavar="MS",
        help="default request deadline (default: none)",
    )
    limits = sub.add_argument_group("connection limits")
    limits.add_argument(
        "--keep-alive-timeout", type=float, metavar="S", help="close an idle connection (5)"
    )
    limits.add_argument(
        "--header-timeout", type=float, metavar="S", help="408 to a header block slower (30)"
    )
    limits.add_argument(
        "--body-timeout", type=float, metavar="S", help="408 to a body stalled this long (30)"
    )
    limits.add_argument(
        "--max-header-bytes",
        metavar="SIZE",
        help="431 to a request line and header fields over this (64KiB)",
    )
    limits.add_argument(
        "--write-timeout", type=float, metavar="S", help="drop a client not reading answers (30)"
    )
    repo = sub.add_argument_group("repository")
    repo.add_argument("--poll-seconds", type=float, metavar="S", help="scan interval (1)")
    repo.add_argument(
        "--no-watch",
        dest="watch",
        action="store_false",
        default=None,
        help="poll only, do not watch the directory",
    )
    repo.add_argument(
        "--on-demand",
        action="store_true",
        default=None,
        help="load a version on its first request; evict idle ones",
    )
    repo.add_argument("--max-bytes", metavar="SIZE", help='memory budget ("8GiB", "50%%")')
    repo.add_argument("--max-models", type=int, metavar="N", help="at most N models loaded")
    repo.add_argument("--load-timeout", type=float, metavar="S", help="per load (300)")
    repo.add_argument(
        "--drain-timeout",
        type=float,
        metavar="S",
        help="wait for requests in flight at unload and shutdown (30)",
    )
    repo.add_argument(
        "--allow-unsafe",
        action="store_true",
        default=None,
        help="allow formats that run code when loaded (pickle, Python)",
    )
    control = sub.add_argument_group("control")
    control.add_argument(
        "--model-control",
        choices=("poll", "explicit"),
        help="poll: follow the directory (default); explicit: API only",
    )
    control.add_argument(
        "--strict-readiness",
        action="store_true",
        default=None,
        help="a FAILED version keeps the server not ready",
    )
    control.add_argument(
        "--management-api",
        action="store_true",
        default=None,
        help="enable repository load/unload (token required)",
    )
    control.add_argument(
        "--token-file", metavar="FILE", help="management token file (or KEEPWARM_MANAGEMENT_TOKEN)"
    )
    sub.set_defaults(func=None)


def serve_parser() -> argparse.ArgumentParser:
    """The ``keepwarm`` parser with ``serve`` alone: what ``keepwarm serve ...`` is parsed
    with, so that starting a server imports nothing the other commands need (issue 7)."""
    parser = argparse.ArgumentParser(prog="keepwarm")
    add_serve_command(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return parser


def run_serve(args: argparse.Namespace) -> int:
    # Until the server (or the supervisor) puts its own handlers in place: nothing is
    # served yet, so SIGINT ends the start as Ctrl-C does (130) and SIGTERM exits 0, as a
    # drained server does (``keepwarm.early_signals``: a swallowed one is raised again).
    from keepwarm import early_signals

    restore = early_signals.install()
    try:
        return early_signals.exit_code(lambda: _serve(args))
    finally:
        restore()


def _serve(args: argparse.Namespace) -> int:
    from keepwarm.server_checks import check_repository_root

    settings = serve_settings(args)
    check_repository_root(args.repo)
    if settings.server.processes > 1:
        from keepwarm.supervisor import supervise

        return supervise(args.repo, settings)
    from keepwarm.server import serve

    return serve(args.repo, settings)


#: Each ``serve`` flag's ``Settings`` key (``section__field``), by its argparse ``dest``.
SETTINGS_OF_FLAGS = {
    "host": "server__host",
    "http_port": "server__http_port",
    "grpc_port": "server__grpc_port",
    "tls_cert": "server__tls_cert",
    "tls_key": "server__tls_key",
    "max_body_bytes": "server__max_body_bytes",
    "request_timeout_ms": "server__request_timeout_ms",
    "keep_alive_timeout": "server__keep_alive_timeout",
    "header_timeout": "server__header_timeout",
    "body_timeout": "server__body_timeout",
    "max_header_bytes": "server__max_header_bytes",
    "write_timeout": "server__write_timeout",
    "model_control": "server__model_control",
    "strict_readiness": "server__strict_readiness",
    "processes": "server__processes",
    "management_api": "server__management_api",
    "token_file": "server__token_file",
    "poll_seconds": "repository__poll_seconds",
    "watch": "repository__watch",
    "on_demand": "repository__on_demand",
    "max_bytes": "budget__max_bytes",
    "max_models": "budget__max_models",
    "load_timeout": "loading__load_timeout",
    "drain_timeout": "loading__drain_timeout",
    "allow_unsafe": "loading__allow_unsafe",
}


def serve_settings(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    """Flags over ``KEEPWARM_*`` (the process's variables unless given) over ``--config`` over the
    defaults; a flag not given is None, which leaves the setting to the layers below. A bad
    flag is an error naming it as typed (``--http-port 70000``) and the setting it sets."""
    overrides = {key: getattr(args, dest) for dest, key in SETTINGS_OF_FLAGS.items()}
    for dest, key in SETTINGS_OF_FLAGS.items():
        value = overrides[key]
        if value is not None:
            _check_flag("--" + dest.replace("_", "-"), key, value)
    return Settings.load(file=args.config, environ=environ, overrides=overrides)


def _check_flag(flag: str, key: str, value: Any) -> None:
    section, _, name = key.partition("__")
    try:
        FIELDS[section][name].metadata["parse"](value)
    except Expected as exc:
        raise InvalidConfigError(f"{flag} {value!r} ({section}.{name}): expected {exc}") from None
