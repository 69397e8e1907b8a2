"""TF Serving REST routes: ``:predict``, model status and metadata, by version or label."""

from __future__ import annotations

from typing import Any

from keepwarm.errors import ModelNotFoundError, UnavailableError
from keepwarm.http.messages import Request, Response, header_timeout, json_response
from keepwarm.http.router import Route
from keepwarm.protocol import tfserving
from keepwarm.service import InferenceService, parse_version
from keepwarm.signature import Signature

# TF Serving's version states, from keepwarm's.
_STATES = {
    "NEW": "START",
    "LOADING": "LOADING",
    "WARMING": "LOADING",
    "READY": "AVAILABLE",
    "DRAINING": "UNLOADING",
    "UNLOADED": "END",
    "FAILED": "END",
}


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
        versions = self.service.versions(name)
        if isinstance(wanted, int):
            versions = [v for v in versions if v[0] == wanted]
            if not versions:
                raise ModelNotFoundError(f"model {name!r} has no version {wanted}")
        elif isinstance(wanted, str):
            info = await self.service.model_info(name, wanted)
            versions = [v for v in versions if v[0] == info.version]
        shown = [
            (version, _STATES.get(state, "UNKNOWN"), reason if state == "FAILED" else "")
            for version, state, reason in reversed(versions)
        ]
        return json_response(tfserving.model_status(shown))

    async def metadata(self, request: Request) -> Response:
        info = await self.service.model_info(request.params["model"], _version_text(request))
        return json_response(tfserving.model_metadata(info.name, info.version, info.signature))

    async def predict(self, request: Request) -> Response:
        service = self.service
        if service.shutting_down:
            raise UnavailableError("the server is shutting down; retry on another server")
        service.refuse_when_overloaded(request.params["model"])  # before reading the body
        parsed = tfserving.parse_predict(await request.body(), max_depth=self.max_json_depth)

        def decode(signature: Signature) -> dict[str, Any]:
            wanted = parsed.signature_name
            if wanted not in (None, "", signature.name):
                raise ModelNotFoundError(
                    f"signature {wanted!r} is not served; this model serves {signature.name!r}"
                )
            return parsed.inputs(signature)

        def encode(name: str, version: int, outputs: dict[str, Any]) -> bytes:
            return tfserving.encode_predict(parsed, outputs)

        data = await service.infer(
            request.params["model"],
            _version_text(request),
            decode,
            encode,
            protocol="tfserving",
            timeout=header_timeout(request),
            disconnected=request.disconnected,
        )
        return Response(200, data)


def _version_text(request: Request) -> str | None:
    params = request.params
    return params.get("version") or params.get("label")


def _which(request: Request) -> int | str | None:
    return parse_version(_version_text(request))
