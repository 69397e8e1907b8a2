"""TensorFlow Serving descriptions of a model, shared by the REST and gRPC faces: version
states and status (``GET /v1/models/{m}``), metadata as a ``signature_def``
(``.../metadata``), and the check of a request's ``signature_name``."""

from __future__ import annotations

from typing import Any

from keepwarm.errors import ModelNotFoundError
from keepwarm.protocol.dtypes import tf_datatype
from keepwarm.signature import Signature, TensorSpec

#: TF Serving's version states, from keepwarm's.
STATES = {
    "NEW": "START",
    "LOADING": "LOADING",
    "WARMING": "LOADING",
    "READY": "AVAILABLE",
    "DRAINING": "UNLOADING",
    "UNLOADED": "END",
    "FAILED": "END",
}


def version_states(
    name: str, versions: list[tuple[int, str, str]], only: int | None, problem: str | None = None
) -> list[tuple[int, str, str]]:
    """(version, TF Serving state, error) newest first, from the service's (version, state,
    reason) rows; ``only``: that version (NOT_FOUND when it has none). ``problem``: what is
    wrong with the model's configuration now, an error of every version (each serves on)."""
    if only is not None:
        versions = [v for v in versions if v[0] == only]
        if not versions:
            raise ModelNotFoundError(f"model {name!r} has no version {only}")
    shown = [(v, STATES.get(state, "UNKNOWN"), reason if state == "FAILED" else "")
             for v, state, reason in reversed(versions)]  # fmt: skip
    return [(v, state, "; ".join(filter(None, [error, problem]))) for v, state, error in shown]


def check_signature(wanted: str | None, signature: Signature) -> None:
    """A request's ``signature_name`` must be empty or the one signature served."""
    if wanted not in (None, "", signature.name):
        raise ModelNotFoundError(
            f"signature {wanted!r} is not served; this model serves {signature.name!r}"
        )


def model_status(versions: list[tuple[int, str, str]]) -> dict[str, Any]:
    """``GET /v1/models/{m}``: (version, TF Serving state, error message) per version."""
    return {
        "model_version_status": [
            {
                "version": str(version),
                "state": state,
                "status": {"error_code": "OK" if not error else "UNKNOWN", "error_message": error},
            }
            for version, state, error in versions
        ]
    }


def model_metadata(name: str, version: int, signature: Signature) -> dict[str, Any]:
    """``GET /v1/models/{m}/metadata``: the served signature as a ``signature_def``."""

    def tensors(specs: tuple[TensorSpec, ...]) -> dict[str, Any]:
        return {
            spec.name: {
                "dtype": tf_datatype(spec.dtype),
                "tensor_shape": (
                    {"dim": [], "unknown_rank": True}
                    if spec.shape is None
                    else {
                        "dim": [
                            {"size": str(-1 if d is None else d), "name": ""} for d in spec.shape
                        ],
                        "unknown_rank": False,
                    }
                ),
                "name": spec.name,
            }
            for spec in specs
        }

    return {
        "model_spec": {"name": name, "signature_name": "", "version": str(version)},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    signature.name: {
                        "inputs": tensors(signature.inputs),
                        "outputs": tensors(signature.outputs),
                        "method_name": "tensorflow/serving/predict",
                    }
                }
            }
        },
    }
