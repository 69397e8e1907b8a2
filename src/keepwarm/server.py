"""The composition root of ``keepwarm serve``: Repository -> InferenceService -> the REST
app on uvicorn and the gRPC server; start-up output; signals and graceful shutdown. On
SIGTERM or SIGINT: readiness answers 503 at once, new inference requests get 503 with
``Retry-After``, requests already received complete; the process exits 0 when none remain
or the drain timeout passes. A second SIGINT exits at once."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from keepwarm.early_signals import hold as hold_signals
from keepwarm.early_signals import raise_pending
from keepwarm.errors import InvalidConfigError
from keepwarm.logs import configure_json_logs, quiet_native_chatter
from keepwarm.preload import finish_preload, preload_tensorflow
from keepwarm.server_checks import bind_error, check_tls, management_token
from keepwarm.server_output import Progress, host_for_url, is_loopback, say
from keepwarm.server_shutdown import exit_past_running_calls, stop_worker_calls
from keepwarm.service_process import tune_interpreter
from keepwarm.settings import ServerSettings, Settings, tensorflow_threads
from keepwarm.thread_priority import configure as configure_priority

if TYPE_CHECKING:
    from keepwarm.server_child import ChildRole

log = logging.getLogger("keepwarm.server")
SEND_GRACE_SECONDS = 3


def serve(
    root: str, settings: Settings, *, out: TextIO | None = None, child: ChildRole | None = None
) -> int:
    """Serve the repository at ``root`` until SIGTERM or SIGINT; returns the exit code.
    ``child``: this is one process of several (``keepwarm.server_child``)."""
    configure_json_logs()  # before the token file's check: its warning was a bare line
    token = management_token(settings)
    check_tls(settings.server)
    restore = quiet_native_chatter()  # TensorFlow's start-up chatter
    preloading = None
    try:  # file descriptor 2 given back whatever ends the start (Ctrl-C: its message shown)
        tensorflow_threads()  # one inter-op thread per model call (see settings)
        server = settings.server
        configure_priority(server.model_nice, server.model_policy, server.model_priority_scope)
        preloading = preload_tensorflow(root, isolate=settings.workers.isolate)
        stream = out if out is not None else sys.stderr
        import uvloop

        untune = tune_interpreter()  # the GIL switch interval (see service_process)
        try:
            hold_signals()  # raised by ``_serve``'s first step, not in the loop's set-up
            drained = uvloop.run(_serve(root, settings, token, stream, child))
        finally:
            untune()
    finally:
        finish_preload(preloading)  # an exit during the preload's dlopen hangs
        restore()
    if not drained:
        exit_past_running_calls()
    return 0


async def _serve(
    root: str, settings: Settings, token: str | None, out: TextIO, child: ChildRole | None
) -> bool:
    """Serve until a signal, then shut down; whether every request ended within the drain
    timeout."""
    # The server's own handlers first: a signal from here on stops it gracefully (below,
    # once started), and one that start-up code swallowed before is raised again here.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals: list[int] = []

    def on_signal(signum: int) -> None:
        if signals and signum == signal.SIGINT:
            os._exit(130)
        signals.append(signum)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    raise_pending()
    from keepwarm.control import ControlledSource
    from keepwarm.process_memory import server_ledger
    from keepwarm.repository import Repository
    from keepwarm.service import InferenceService
    from keepwarm.sources.listing import open_source
    from keepwarm.workers.memory import watch_default_pool

    cfg = settings.server
    control = None
    if cfg.management_api or cfg.model_control == "explicit":
        # The repository's own source for ``root``, wrapped; polled then, not watched.
        control = ControlledSource(open_source(root, settings.downloads), cfg.model_control)
    repository = Repository(root, settings=settings, source=control)
    timeout = None if cfg.request_timeout_ms is None else cfg.request_timeout_ms / 1000.0
    service = InferenceService(
        repository,
        default_timeout=timeout,
        strict_readiness=cfg.strict_readiness,
        control=control,
        management_token=token,
        load_timeout=settings.loading.load_timeout,
        freeze_heap=True,
    )
    service.metrics.watch_counters(lambda: repository.manager.counters)
    say(out, f"keepwarm serving {root}")
    # A process restarted among several starts serving once ready (its connections wait).
    late = child is not None and child.spec.late
    server = None if late else await _start_http(service, cfg, token, out, child)
    progress = Progress(out, service.ready)
    unsubscribers: list[Callable[[], Any]] = [
        repository.subscribe(progress.on_event),
        repository.subscribe(service.metrics.on_event),
        server_ledger().watch(repository.manager.events),  # /metrics: unreclaimed bytes
        watch_default_pool(settings.workers),  # replaces workers that hold too much
    ]
    if child is not None:  # its siblings' metrics merged into its /metrics, and its given
        unsubscribers.append(await child.start(service))
    # Loads start before the gRPC server: TensorFlow's import (seconds) overlaps it. The
    # first scan sees every file as new; a second takes those that did not change.
    await asyncio.to_thread(repository.start)
    await asyncio.to_thread(repository.refresh)
    if late:
        assert child is not None
        service.started()
        await child.until_ready(service, stop)
        try:
            server = await _start_http(service, cfg, token, out, child)
        except BaseException:
            await _close(repository, service, unsubscribers)
            raise
    try:
        grpc_server = await _start_grpc(service, settings, out, share_port=child is not None)
    except BaseException:
        await _close(repository, service, unsubscribers)
        raise
    assert server is not None
    main_loop = asyncio.create_task(server.main_loop())
    service.started()
    if grpc_server is not None:
        await grpc_server.follow_readiness()
    progress.check()
    await stop.wait()
    service.begin_shutdown()
    if grpc_server is not None:
        await grpc_server.begin_shutdown()
    say(out, f"shutting down ({signal.Signals(signals[0]).name}): finishing requests in flight")
    drained = await service.wait_idle(settings.loading.drain_timeout)
    if not drained:
        log.warning("requests still in flight after the drain timeout; exiting anyway")
        await asyncio.to_thread(stop_worker_calls)
    server.should_exit = True
    await main_loop
    await server.shutdown()
    if grpc_server is not None:
        await grpc_server.stop(grace=SEND_GRACE_SECONDS)
    await _close(repository, service, unsubscribers)
    say(out, "stopped")
    return drained


async def _close(repository: Any, service: Any, unsubscribers: list[Callable[[], Any]]) -> None:
    for unsubscribe in unsubscribers:
        done = unsubscribe()
        if done is not None:
            await done
    await asyncio.to_thread(repository.close)
    service.close()


async def _start_http(
    service: Any, cfg: ServerSettings, token: str | None, out: TextIO, child: ChildRole | None
) -> Any:
    """uvicorn serving the REST app on ``server.http_port`` (a child's given socket), started
    (its URL said); an address that cannot be bound is an ``InvalidConfigError``."""
    import uvicorn

    from keepwarm.http import HttpApp
    from keepwarm.http.protocol import OneWriteProtocol
    from keepwarm.http.timers import Limits

    app = HttpApp(service, max_body_bytes=cfg.max_body_bytes, max_json_depth=cfg.max_json_depth)
    limits = Limits(
        keep_alive=cfg.keep_alive_timeout,
        header=cfg.header_timeout,
        body=cfg.body_timeout,
        max_header_bytes=cfg.max_header_bytes,
        write=cfg.write_timeout,
    )
    config = uvicorn.Config(
        app,
        host=cfg.host,
        port=cfg.http_port,
        loop="none",
        # uvicorn's httptools, one write per response, with the connection limits and the
        # app's answers on headers alone (uvicorn calls what it is given as the class)
        http=functools.partial(  # type: ignore[arg-type]
            OneWriteProtocol, limits=limits, early=app.early_answer, lean=app
        ),
        lifespan="off",
        log_config=None,  # keepwarm's JSON lines (``configure_json_logs``), not uvicorn's
        log_level="warning",
        access_log=False,
        server_header=False,
        date_header=False,
        # No X-Forwarded-* rewriting of the client's address: nothing here reads it, and
        # the middleware is a layer on every request.
        proxy_headers=False,
        # After the drain (requests answered), connections still open get this long to
        # finish sending; an idle or half-open one (a stalled TLS handshake) is then closed.
        timeout_graceful_shutdown=SEND_GRACE_SECONDS,
        ssl_certfile=None if cfg.tls_cert is None else os.fspath(cfg.tls_cert),
        ssl_keyfile=None if cfg.tls_key is None else os.fspath(cfg.tls_key),
    )
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    uvicorn_log = logging.getLogger("uvicorn.error")
    level = uvicorn_log.level
    uvicorn_log.setLevel(logging.CRITICAL)  # a bind error is said once, by ours
    try:
        await server.startup(sockets=None if child is None else child.sockets)
    except SystemExit as exc:  # uvicorn's way to say it could not bind
        reason = exc.__context__ or "cannot be bound"  # the OSError (or gaierror)
        raise InvalidConfigError(f"REST port {cfg.http_port} on {cfg.host}: {reason}") from None
    finally:
        uvicorn_log.setLevel(level)
    scheme = "https" if cfg.tls_cert is not None else "http"
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"{scheme}://{host_for_url(cfg.host)}:{port}"
    rest = "TF Serving: /v1/models/NAME:predict; KServe v2: /v2/models/NAME/infer"
    say(out, f"  REST  {url}  ({rest})")
    say(out, f"  also  {url}/metrics  {url}/openapi.json  {url}/v2/health/ready")
    if token is not None and not is_loopback(cfg.host) and cfg.tls_cert is None:
        log.warning(
            "the management API is on and bound to %s without TLS: its token crosses the "
            "network in clear text; give --tls-cert and --tls-key",
            cfg.host,
        )
    return server


async def _start_grpc(service: Any, settings: Settings, out: TextIO, *, share_port: bool) -> Any:
    """The gRPC server on ``server.grpc_port`` (both services, TLS as REST), or None when
    the ``grpc`` extra is not installed (said once). ``share_port``: one process of several
    (``SO_REUSEPORT``); otherwise a port in use is an error."""
    cfg = settings.server
    try:
        from keepwarm.grpc.server import GrpcServer, Tls
    except ImportError as exc:
        say(out, f"  gRPC  off: {exc.name} is not installed (pip install 'keepwarm[grpc]')")
        return None
    tls = None
    if cfg.tls_cert is not None and cfg.tls_key is not None:
        tls = Tls(cfg.tls_cert, cfg.tls_key)
    grpc_server = GrpcServer(
        service,
        host=cfg.host,
        port=cfg.grpc_port,
        max_message_bytes=cfg.max_body_bytes,
        tls=tls,
        share_port=share_port,
    )
    try:
        await grpc_server.start()
    except RuntimeError as exc:  # grpc: "Failed to bind to address ...", not why
        why = bind_error(cfg.host, cfg.grpc_port) or exc
        raise InvalidConfigError(f"gRPC port {cfg.grpc_port} on {cfg.host}: {why}") from None
    say(
        out,
        f"  gRPC  {host_for_url(cfg.host)}:{grpc_server.port}  (TF Serving: "
        "tensorflow.serving.PredictionService; KServe v2: inference.GRPCInferenceService)",
    )
    return grpc_server


__all__ = ["management_token", "serve"]
