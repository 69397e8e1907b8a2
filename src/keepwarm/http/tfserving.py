"""TF Serving REST routes: ``:predict``, model status and metadata, by version or label."""

from __future__ import annotations

from typing import Any

from keepwarm.errors import UnavailableError
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
from keepwarm.protocol import tflean, tfserving
from keepwarm.service import InferenceService
from keepwarm.service_names import parse_version
from keepwarm.signature import Signature


class TfServingRoutes:
    def __init__(self, service: InferenceService, *, max_json_depth: int) -> None:
        self.service = service
        self.max_json_depth = max_json_depth

    def routes(self) -> list[Route]:
        routes = []
        for prefix in (
            "/v1/models/{model}",
            "/v1/models/{model}/versions/{version}",
            "/v1/models/{model}/labels/{label}",
        ):
            routes += [
                Route("GET", prefix, self.status, "tfserving"),
                Route("GET", prefix + "/metadata", self.metadata, "tfserving"),
                Route("POST", prefix + ":predict", self.predict, "tfserving"),
            ]
        return routes

    async def status(self, request: Request) -> Response:
        name = request.params["model"]
        wanted = _which(request)
        versions, problem = self.service.model_status(name)
        if isinstance(wanted, str):
            info = await self.service.model_info(name, wanted, header_timeout(request))
            wanted = info.version
        shown = tfserving.version_states(name, versions, wanted, problem)
        return json_response(tfserving.model_status(shown))

    async def metadata(self, request: Request) -> Response:
        info = await self.service.model_info(
            request.params["model"], _version_text(request), header_timeout(request)
        )
        return json_response(tfserving.model_metadata(info.name, info.version, info.signature))

    async def predict(self, request: Request) -> Response:
        service = self.service
        if service.shutting_down:
            raise UnavailableError("the server is shutting down; retry on another server")
        refuse_when_overloaded(service, request)  # before reading the body
        depth = self.max_json_depth
        body = await request.body()
        # A plain small body in one parse (``tflean``), else the usual way
        lean = tflean.parse(body, depth) if len(body) <= INLINE_DECODE_BYTES else None
        found = lean
        if found is None:
            found = await parse_off_loop(
                body, lambda raw: tfserving.parse_predict(raw, max_depth=depth)
            )
        memo: list[Any] = []  # (signature, inputs): built once though asked twice

        def decode(signature: Signature) -> dict[str, Any]:
            if memo and memo[0] is signature:
                return memo[1]  # type: ignore[no-any-return]
            tfserving.check_signature(found.signature_name, signature)
            inputs = found.inputs(signature)
            memo[:] = (signature, inputs)
            return inputs

        send = request.answer_here()

        def encode(name: str, version: int, outputs: dict[str, Any]) -> Response:
            response = Response(200, tfserving.encode_predict(found, outputs))
            if send is not None:
                send(response)  # written from this thread (``http/answer_here.py``)
            return response

        return await service.infer(
            request.params["model"],
            _version_text(request),
            decode,
            encode,
            protocol="tfserving",
            timeout=header_timeout(request),
            disconnected=request.disconnected,
            # read whole in one parse (``tflean``): its tensors are arrays already, and
            # only cast to the signature's dtypes, cheap enough for the loop at this size,
            # so a batched model's queue takes it from here
            decoded=lean is not None,
        )


def _version_text(request: Request) -> str | None:
    params = request.params
    return params.get("version") or params.get("label")


def _which(request: Request) -> int | str | None:
    return parse_version(_version_text(request))
