"""KServe v2 descriptions of a model: its metadata (``GET /v2/models/{m}``) and Triton's
model configuration (``.../config``), shared by the REST and gRPC faces."""

from __future__ import annotations

from typing import Any

from keepwarm.errors import InvalidInputError
from keepwarm.protocol.dtypes import v2_datatype
from keepwarm.signature import Signature, TensorSpec


def model_metadata(name: str, versions: list[int], signature: Signature) -> dict[str, Any]:
    """``GET /v2/models/{m}``: the model's tensors in v2 terms (-1: any size)."""

    def tensor(spec: Any) -> dict[str, Any]:
        shape = [-1] if spec.shape is None else [-1 if d is None else d for d in spec.shape]
        return {"name": spec.name, "datatype": v2_datatype(spec.dtype), "shape": shape}

    return {
        "name": name,
        "versions": [str(v) for v in versions],
        "platform": "keepwarm",
        "inputs": [tensor(spec) for spec in signature.inputs],
        "outputs": [tensor(spec) for spec in signature.outputs],
    }


def model_config(name: str, signature: Signature) -> dict[str, Any]:
    """Triton's model configuration, as far as its clients read it. ``max_batch_size`` 0:
    the dims below include the batch axis."""

    def tensor(spec: TensorSpec) -> dict[str, Any]:
        dims = [-1] if spec.shape is None else [-1 if d is None else d for d in spec.shape]
        return {"name": spec.name, "data_type": "TYPE_" + _config_type(spec), "dims": dims}

    return {
        "name": name,
        "platform": "keepwarm",
        "backend": "keepwarm",
        "max_batch_size": 0,
        "input": [tensor(spec) for spec in signature.inputs],
        "output": [tensor(spec) for spec in signature.outputs],
    }


def _config_type(spec: TensorSpec) -> str:
    try:
        datatype = v2_datatype(spec.dtype)
    except InvalidInputError:
        return "INVALID"
    return "STRING" if datatype == "BYTES" else datatype
