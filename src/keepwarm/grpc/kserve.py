"""KServe v2's ``inference.GRPCInferenceService`` (with Triton's model config, statistics
and repository RPCs) over the ``InferenceService``: parse, call the service, encode. The
RPCs run on the gRPC server's handler threads, through the service's blocking forms."""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
from google.protobuf import json_format

from keepwarm.control import bearer, check_parameters, check_repository
from keepwarm.errors import UnavailableError
from keepwarm.grpc.errors import leaving, mapped
from keepwarm.grpc.protos.inference import grpc_service_pb2 as pb
from keepwarm.protocol import v2, v2meta, v2proto
from keepwarm.service import InferenceService
from keepwarm.signature import Signature

Context: TypeAlias = Any  # grpc.ServicerContext (grpc ships no types)


#: gRPC's threaded server tells a call without a deadline that it has some 292 years left.
NO_DEADLINE_S = 365 * 24 * 3600.0


def deadline(context: Context) -> float | None:
    """Seconds left before the client's deadline, or None when it set none."""
    remaining: float | None = context.time_remaining()
    if remaining is None or remaining > NO_DEADLINE_S:
        return None
    return max(0.0, remaining)


def token(context: Context) -> str | None:
    """The management token from the ``authorization: Bearer TOKEN`` metadata."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return bearer(value if isinstance(value, str) else value.decode())
    return None


def _message(message: Any, values: Any) -> Any:
    """Fill ``message`` from the service's JSON-shaped dict (the REST body)."""
    return json_format.ParseDict(values, message, ignore_unknown_fields=True)


class KServeServicer:
    """The RPCs of ``inference.GRPCInferenceService``; ``max_bytes`` bounds the tensor a
    request may describe."""

    def __init__(self, service: InferenceService, *, max_bytes: int) -> None:
        self.service = service
        self.max_bytes = max_bytes

    @mapped
    def ServerLive(self, request: Any, context: Context) -> Any:
        return pb.ServerLiveResponse(live=self.service.live())

    @mapped
    def ServerReady(self, request: Any, context: Context) -> Any:
        return pb.ServerReadyResponse(ready=self.service.ready())

    @mapped
    def ModelReady(self, request: Any, context: Context) -> Any:
        ready = self.service.model_ready(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=ready)

    @mapped
    def ServerMetadata(self, request: Any, context: Context) -> Any:
        return _message(pb.ServerMetadataResponse(), self.service.server_metadata())

    @mapped
    def ModelMetadata(self, request: Any, context: Context) -> Any:
        info = self.service.model_info_blocking(request.name, request.version or None)
        metadata = v2meta.model_metadata(info.name, info.versions, info.signature)
        return _message(pb.ModelMetadataResponse(), metadata)

    @mapped
    def ModelConfig(self, request: Any, context: Context) -> Any:
        info = self.service.model_info_blocking(request.name, request.version or None)
        config = v2meta.model_config(info.name, info.signature)
        return _message(pb.ModelConfigResponse(), {"config": config})

    @mapped
    def ModelStatistics(self, request: Any, context: Context) -> Any:
        rows = self.service.statistics(request.name or None, request.version or None)
        return _message(pb.ModelStatisticsResponse(), {"model_stats": rows})

    @mapped
    def RepositoryIndex(self, request: Any, context: Context) -> Any:
        check_repository(request.repository_name)
        rows = self.service.index(ready_only=request.ready)
        return _message(pb.RepositoryIndexResponse(), {"models": rows})

    @mapped
    def RepositoryModelLoad(self, request: Any, context: Context) -> Any:
        self._checked(request, "load", token(context))
        self.service.load_blocking(request.model_name, token(context))
        return pb.RepositoryModelLoadResponse()

    @mapped
    def RepositoryModelUnload(self, request: Any, context: Context) -> Any:
        self._checked(request, "unload", token(context))
        self.service.unload_blocking(request.model_name, token(context))
        return pb.RepositoryModelUnloadResponse()

    def _checked(self, request: Any, action: str, presented: str | None) -> None:
        """A load or unload checked as over REST: the token first, then the repository
        named (none: see ``check_repository``), then the parameters."""
        self.service.management.authorize(presented)
        check_repository(request.repository_name)
        check_parameters(action, request.parameters)

    @mapped
    def ModelInfer(self, request: Any, context: Context) -> Any:
        if self.service.shutting_down:
            raise UnavailableError("the server is shutting down; retry on another server")
        self.service.refuse_when_overloaded(request.model_name)  # before decoding anything
        parameters = v2proto.parameters(request.parameters)
        timeout = v2.request_timeout(parameters, deadline(context))
        decoded: v2.InferRequest | None = None
        max_bytes = self.max_bytes

        def decode(signature: Signature) -> dict[str, np.ndarray]:
            nonlocal decoded  # decode and encode run one after the other, on one thread
            decoded = v2proto.decode_request(request, max_bytes=max_bytes)
            return decoded.inputs

        def encode(name: str, version: int, outputs: dict[str, np.ndarray]) -> Any:
            assert decoded is not None
            return v2proto.encode_response(decoded, name, version, outputs)

        return self.service.infer_blocking(
            request.model_name,
            request.model_version or None,
            decode,
            encode,
            protocol="v2-grpc",
            timeout=timeout,
            call=leaving(context),
        )
