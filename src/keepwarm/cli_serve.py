"""``keepwarm serve [REPO]``: flags become ``Settings`` (flags > ``KEEPWARM_*`` > the
``--config`` file > defaults), then ``keepwarm.server.serve`` runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

from keepwarm.errors import KeepwarmError
from keepwarm.settings import Settings


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
        "--max-header-bytes", metavar="SIZE", help="431 to a header block larger (64KiB)"
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
    try:
        settings = serve_settings(args)
        if settings.server.processes > 1:
            from keepwarm.supervisor import supervise

            return supervise(args.repo, settings)
        from keepwarm.server import serve

        return serve(args.repo, settings)
    except KeepwarmError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the server's own handlers are in place
        print("interrupted", file=sys.stderr)
        return 130


def serve_settings(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    """Flags over ``KEEPWARM_*`` (the process's variables unless given) over ``--config`` over the
    defaults; a flag not given is None, which leaves the setting to the layers below."""
    return Settings.load(
        file=args.config,
        environ=environ,
        overrides=dict(
            server__host=args.host,
            server__http_port=args.http_port,
            server__grpc_port=args.grpc_port,
            server__tls_cert=args.tls_cert,
            server__tls_key=args.tls_key,
            server__max_body_bytes=args.max_body_bytes,
            server__request_timeout_ms=args.request_timeout_ms,
            server__keep_alive_timeout=args.keep_alive_timeout,
            server__header_timeout=args.header_timeout,
            server__body_timeout=args.body_timeout,
            server__max_header_bytes=args.max_header_bytes,
            server__write_timeout=args.write_timeout,
            server__model_control=args.model_control,
            server__strict_readiness=args.strict_readiness,
            server__processes=args.processes,
            server__management_api=args.management_api,
            server__token_file=args.token_file,
            repository__poll_seconds=args.poll_seconds,
            repository__watch=args.watch,
            repository__on_demand=args.on_demand,
            budget__max_bytes=args.max_bytes,
            budget__max_models=args.max_models,
            loading__load_timeout=args.load_timeout,
            loading__drain_timeout=args.drain_timeout,
            loading__allow_unsafe=args.allow_unsafe,
        ),
    )
