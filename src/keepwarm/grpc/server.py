"""The gRPC server: KServe v2 and TF Serving's services on one port, with the standard
health service (kept in step with the service's readiness) and server reflection.

It is grpcio's threaded server, not ``grpc.aio``: each RPC runs on one of its handler
threads from start to end, the model included (the service's blocking forms), which
spares the hops between gRPC's poller thread, the event loop and a worker thread (about
0.15 ms a request here). Its start and stop are coroutines, for the event loop that runs
the rest of the server.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import HealthServicer
from grpc_reflection.v1alpha import reflection, reflection_pb2

from keepwarm.grpc.kserve import KServeServicer
from keepwarm.grpc.protos import POOL
from keepwarm.grpc.protos.inference import grpc_service_pb2, grpc_service_pb2_grpc
from keepwarm.grpc.protos.tensorflow_serving.apis import (
    model_service_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
)
from keepwarm.grpc.tfserving import ModelServicer, PredictionServicer
from keepwarm.service import InferenceService

for _standard in (health_pb2, reflection_pb2):  # so that reflection can describe them too
    POOL.AddSerializedFile(_standard.DESCRIPTOR.serialized_pb)

SERVICES = (
    grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
    prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name,
    model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
#: The largest message grpcio takes a limit for (its channel arguments are C ints): a
#: ``server.max_body_bytes`` above it bounds REST bodies alone.
MAX_MESSAGE_BYTES = 2**31 - 1
#: Handler threads: RPCs beyond them wait for one. A request waiting for its batch holds
#: one, as does a health watch; at most the service's ``workers`` run a model at once.
DEFAULT_THREADS = 64


@dataclass(frozen=True, slots=True)
class Tls:
    cert: Path
    key: Path

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.key.read_bytes(), self.cert.read_bytes())])


class GrpcServer:
    """``await start()`` binds ``host:port`` (0: a free port, see ``port``; a port another
    socket holds is refused unless ``share_port``, for the processes of one server),
    ``follow_readiness()`` turns health on, ``stop()`` ends it after ``grace`` seconds for
    the calls in flight."""

    def __init__(
        self,
        service: InferenceService,
        *,
        host: str = "127.0.0.1",
        port: int = 8500,
        max_message_bytes: int = 64 * 1024 * 1024,
        tls: Tls | None = None,
        threads: int = DEFAULT_THREADS,
        share_port: bool = False,
    ) -> None:
        self.service = service
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.tls = tls
        self.port = port
        self.health = HealthServicer()
        self._ready: bool | None = None
        self._unsubscribe: Any = None
        self._health_lock = threading.Lock()
        max_message_bytes = min(max_message_bytes, MAX_MESSAGE_BYTES)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="keepwarm-grpc")
        self._server = grpc.server(
            self._pool,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                # grpcio's default is SO_REUSEPORT: a second server would bind the same
                # port and take half of the connections; only a supervisor's processes share
                ("grpc.so_reuseport", int(share_port)),
            ],
        )
        server = self._server
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            KServeServicer(service, max_bytes=max_message_bytes), server
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(service, max_bytes=max_message_bytes), server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(service), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (*SERVICES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME),
            server,
            pool=POOL,
        )  # fmt: skip

    async def start(self) -> None:
        """Bind and serve; health says NOT_SERVING until ``follow_readiness``."""
        if self.tls is None:
            self.port = self._server.add_insecure_port(self.address)
        else:
            self.port = self._server.add_secure_port(self.address, self.tls.credentials())
        for name in ("", *SERVICES):
            self.health.set(name, NOT_SERVING)
        self._ready = False
        self._server.start()

    async def follow_readiness(self) -> None:
        """From now on health follows the service's readiness (call once the repository
        has been scanned: an empty one is ready)."""
        self._sync_health()

        def on_event(event: Any) -> None:  # on a manager thread: read readiness elsewhere
            self._pool.submit(self._sync_health)

        self._unsubscribe = self.service.repository.subscribe(on_event)

    def _sync_health(self) -> None:
        """Health follows the service's readiness: SERVING for "" and each service once
        ready, NOT_SERVING before and after (shutdown). The health servicer is
        thread-safe."""
        with self._health_lock:  # events of two threads: the last readiness read wins
            ready = self.service.ready()
            if ready == self._ready:
                return
            self._ready = ready
            # "" speaks for the server as a whole: SERVING last and NOT_SERVING first, so
            # a client that saw "" SERVING finds every service SERVING too
            names = (*SERVICES, "") if ready else ("", *SERVICES)
            for name in names:
                self.health.set(name, SERVING if ready else NOT_SERVING)

    async def begin_shutdown(self) -> None:
        """Health answers NOT_SERVING from now on (call after the service's own)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.health.enter_graceful_shutdown()

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new calls; those in flight get ``grace`` seconds (None: all they need)."""
        await self.begin_shutdown()
        stopped = self._server.stop(grace)
        await asyncio.to_thread(stopped.wait)
        self._pool.shutdown(wait=False)

    async def wait(self) -> None:
        await asyncio.to_thread(self._server.wait_for_termination)
