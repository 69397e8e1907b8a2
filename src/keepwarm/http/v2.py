"""KServe v2 REST routes (with Triton's model config and statistics endpoints)."""

from __future__ import annotations

from typing import Any

from keepwarm.control import bearer, check_parameters, check_repository
from keepwarm.errors import InvalidInputError, UnavailableError
from keepwarm.http.messages import (
    INLINE_DECODE_BYTES,
    Request,
    Response,
    header_timeout,
    json_response,
    parse_off_loop,
    refuse_when_overloaded,
)
from keepwarm.http.router import Route
from keepwarm.protocol import jsonio, v2, v2lean, v2meta
from keepwarm.service import InferenceService

HEADER_LENGTH = b"inference-header-content-length"


class V2Routes:
    def __init__(self, service: InferenceService, *, max_json_depth: int) -> None:
        self.service = service
        self.max_json_depth = max_json_depth

    def routes(self) -> list[Route]:
        model = "/v2/models/{model}"
        version = "/v2/models/{model}/versions/{version}"
        routes = [
            Route("GET", "/v2/health/live", self.live, "v2"),
            Route("GET", "/v2/health/ready", self.ready, "v2"),
            Route("GET", "/v2", self.server_metadata, "v2"),
            Route("GET", "/v2/models/stats", self.stats, "v2"),
        ]
        for repository in ("/v2/repository", "/v2/repository/{repository}"):  # Triton's both
            routes += [
                Route("POST", repository + "/index", self.index, "v2"),
                Route("POST", repository + "/models/{model}/load", self.load, "v2"),
                Route("POST", repository + "/models/{model}/unload", self.unload, "v2"),
            ]
        for prefix in (model, version):
            routes += [
                Route("GET", prefix, self.model_metadata, "v2"),
                Route("GET", prefix + "/ready", self.model_ready, "v2"),
                Route("POST", prefix + "/infer", self.infer, "v2"),
                Route("GET", prefix + "/config", self.model_config, "v2"),
                Route("GET", prefix + "/stats", self.stats, "v2"),
            ]
        return routes

    async def live(self, request: Request) -> Response:
        return json_response({"live": self.service.live()})

    async def ready(self, request: Request) -> Response:
        ready = self.service.ready()
        return json_response({"ready": ready}, 200 if ready else 503)

    async def server_metadata(self, request: Request) -> Response:
        return json_response(self.service.server_metadata())

    async def model_ready(self, request: Request) -> Response:
        params = request.params
        ready = self.service.model_ready(params["model"], params.get("version"))
        return json_response({"name": params["model"], "ready": ready}, 200 if ready else 503)

    async def model_metadata(self, request: Request) -> Response:
        params = request.params
        info = await self.service.model_info(
            params["model"], params.get("version"), header_timeout(request)
        )
        return json_response(v2meta.model_metadata(info.name, info.versions, info.signature))

    async def model_config(self, request: Request) -> Response:
        params = request.params
        info = await self.service.model_info(
            params["model"], params.get("version"), header_timeout(request)
        )
        return json_response(v2meta.model_config(info.name, info.signature))

    async def stats(self, request: Request) -> Response:
        name = request.params.get("model")
        return json_response(
            {"model_stats": self.service.statistics(name, request.params.get("version"))}
        )

    async def index(self, request: Request) -> Response:
        check_repository(request.params.get("repository", ""))
        body = await request.body()
        if body.strip():
            options = jsonio.loads(body, max_depth=self.max_json_depth)
            if not isinstance(options, dict):
                raise InvalidInputError("the index request body must be a JSON object")
            ready = options.get("ready", False)
            if not isinstance(ready, bool):
                raise InvalidInputError(f"'ready' must be true or false, got {ready!r}")
            return json_response(self.service.index(ready_only=ready))
        return json_response(self.service.index())

    async def load(self, request: Request) -> Response:
        token = await self._parameters(request, "load")
        await self.service.load(request.params["model"], token)
        return json_response({})

    async def unload(self, request: Request) -> Response:
        token = await self._parameters(request, "unload")
        await self.service.unload(request.params["model"], token)
        return json_response({})

    async def _parameters(self, request: Request, action: str) -> str | None:
        """The token presented, once the API and the token are checked (401 and 403 before
        the body is read), then the repository named (none: see ``check_repository``); a
        load or unload body: none, or an object whose ``parameters`` keepwarm honours."""
        token = bearer(request.header(b"authorization"))
        self.service.management.authorize(token)
        check_repository(request.params.get("repository", ""))
        body = await request.body()
        if not body.strip():
            return token
        options = jsonio.loads(body, max_depth=self.max_json_depth)
        if not isinstance(options, dict):
            raise InvalidInputError(f"the {action} request body must be a JSON object")
        found = options.get("parameters", {})
        if not isinstance(found, dict):
            raise InvalidInputError(f"'parameters' of the {action} request must be an object")
        check_parameters(action, found)
        return token

    async def infer(self, request: Request) -> Response:
        service = self.service
        if service.shutting_down:  # before reading the body: refuse at once
            raise UnavailableError("the server is shutting down; retry on another server")
        refuse_when_overloaded(service, request)  # as at once
        body = await request.body()
        length = _header_length(request)
        depth = self.max_json_depth
        # Here when cheap (a binary tensor is a view of the body, whatever its size),
        # else on a thread: the event loop keeps running while a large JSON is parsed.
        # A plain small JSON body first in one parse (``v2lean``), else the usual way.
        decoded = (
            v2lean.decode(body, depth)
            if length is None and len(body) <= INLINE_DECODE_BYTES
            else None
        ) or v2.decode_small(body, header_length=length, max_depth=depth, limit=INLINE_DECODE_BYTES)
        inline = decoded is not None
        if decoded is None:
            decoded = await parse_off_loop(
                body, lambda raw: v2.decode_request(raw, header_length=length, max_depth=depth)
            )
        timeout = v2.request_timeout(decoded.parameters, header_timeout(request))

        send = request.answer_here()

        def encode(name: str, version: int, outputs: dict[str, Any]) -> Response:
            data, json_length = v2.encode_response(decoded, name, version, outputs)
            if json_length is None:
                response = Response(200, data)
            else:
                length = [(HEADER_LENGTH, str(json_length).encode())]
                response = Response(200, data, b"application/octet-stream", length)
            if send is not None:
                send(response)  # written from this thread (``http/answer_here.py``)
            return response

        return await service.infer(
            request.params["model"],
            request.params.get("version"),
            lambda signature: decoded.inputs,
            encode,
            protocol="v2",
            timeout=timeout,
            disconnected=request.disconnected,
            # inputs decoded here: a batched model's queue takes them here
            decoded=inline,
        )


def _header_length(request: Request) -> int | None:
    value = request.header(HEADER_LENGTH)
    if value is None:
        return None
    if not (value.isascii() and value.strip().isdigit()):
        raise InvalidInputError(
            f"Inference-Header-Content-Length {value!r} is not a number of bytes, at least 0"
        )
    return int(value)
