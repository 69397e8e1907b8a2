"""TF Serving's ``tensorflow.serving.PredictionService`` (Predict, GetModelMetadata) and
``ModelService`` (GetModelStatus) over the ``InferenceService``."""

from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf import json_format

from keepwarm.errors import InvalidInputError, UnavailableError
from keepwarm.grpc.errors import leaving, mapped
from keepwarm.grpc.kserve import Context, deadline
from keepwarm.grpc.protos import POOL
from keepwarm.grpc.protos.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
)
from keepwarm.protocol import tensorproto, tfserving
from keepwarm.service import InferenceService
from keepwarm.service_names import parse_version
from keepwarm.signature import Signature

SIGNATURE_DEF = "signature_def"


def requested_version(spec: Any) -> str | None:
    """A ``ModelSpec``'s version as the service reads it: a number, a label or None."""
    which = spec.WhichOneof("version_choice")
    if which == "version":
        if spec.version.value <= 0:
            raise InvalidInputError(f"version {spec.version.value}: versions are positive integers")
        return str(spec.version.value)
    if which == "version_label":
        if not spec.version_label:
            raise InvalidInputError("version_label is empty; give a label or no version")
        return str(spec.version_label)
    return None


def _spec(name: str, version: int, signature: str) -> Any:
    spec = model_pb2.ModelSpec(name=name, signature_name=signature)
    spec.version.value = version
    return spec


class PredictionServicer:
    """``Predict`` and ``GetModelMetadata``; ``max_bytes`` bounds what a request tensor may
    expand to."""

    def __init__(self, service: InferenceService, *, max_bytes: int) -> None:
        self.service = service
        self.max_bytes = max_bytes

    @mapped
    def Predict(self, request: Any, context: Context) -> Any:
        if self.service.shutting_down:
            raise UnavailableError("the server is shutting down; retry on another server")
        spec = request.model_spec
        self.service.refuse_when_overloaded(spec.name)  # before decoding anything
        wanted = list(request.output_filter)
        max_bytes = self.max_bytes
        served = ""

        def decode(signature: Signature) -> dict[str, np.ndarray]:
            nonlocal served  # decode and encode run one after the other, on one thread
            tfserving.check_signature(spec.signature_name, signature)
            served = signature.name
            return {
                name: tensorproto.to_numpy(proto, name=name, max_bytes=max_bytes)
                for name, proto in request.inputs.items()
            }

        def encode(name: str, version: int, outputs: dict[str, np.ndarray]) -> Any:
            unknown = [n for n in wanted if n not in outputs]
            if unknown:
                raise InvalidInputError(
                    f"output_filter names {unknown}, which are not outputs of the model "
                    f"(outputs: {', '.join(outputs)})"
                )
            response = predict_pb2.PredictResponse(model_spec=_spec(name, version, served))
            for key in wanted or outputs:
                response.outputs[key].CopyFrom(tensorproto.from_numpy(outputs[key], name=key))
            return response

        return self.service.infer_blocking(
            spec.name,
            requested_version(spec),
            decode,
            encode,
            protocol="tfserving-grpc",
            timeout=deadline(context),
            call=leaving(context),
        )

    @mapped
    def GetModelMetadata(self, request: Any, context: Context) -> Any:
        fields = list(request.metadata_field)
        if not fields:
            raise InvalidInputError(f"metadata_field is empty; ask for {SIGNATURE_DEF!r}")
        unsupported = [f for f in fields if f != SIGNATURE_DEF]
        if unsupported:
            raise InvalidInputError(
                f"metadata_field {unsupported[0]!r} is not supported; ask for {SIGNATURE_DEF!r}"
            )
        spec = request.model_spec
        info = self.service.model_info_blocking(spec.name, requested_version(spec))
        body = tfserving.model_metadata(info.name, info.version, info.signature)
        signatures = json_format.ParseDict(
            body["metadata"][SIGNATURE_DEF],
            get_model_metadata_pb2.SignatureDefMap(),
            descriptor_pool=POOL,
        )
        response = get_model_metadata_pb2.GetModelMetadataResponse(
            model_spec=_spec(info.name, info.version, spec.signature_name)
        )
        response.metadata[SIGNATURE_DEF].Pack(signatures)
        return response


class ModelServicer:
    """``GetModelStatus``: every version of a model, or the one its spec names."""

    def __init__(self, service: InferenceService) -> None:
        self.service = service

    @mapped
    def GetModelStatus(self, request: Any, context: Context) -> Any:
        spec = request.model_spec
        name = spec.name
        versions, problem = self.service.model_status(name)
        wanted = parse_version(requested_version(spec))
        if isinstance(wanted, str):
            wanted = (self.service.model_info_blocking(name, wanted)).version
        rows = tfserving.model_status(tfserving.version_states(name, versions, wanted, problem))
        return json_format.ParseDict(
            rows, get_model_status_pb2.GetModelStatusResponse(), ignore_unknown_fields=True
        )
