"""A model repository for the gRPC tests, and a loopback gRPC server process over it.

Models (ONNX, random-free so answers are known): ``mlp`` versions 1 and 2 (``y = x @ W *
version``, labels ``stable`` = 1 and ``canary`` = 2), ``types`` (one identity per v2
datatype, each input ``<t>`` answered as ``<t>_out``; ``typed``: the same without FP16,
which has no typed contents), ``spare`` (for the repository API)
and ``swap`` (version 1; a test adds 2)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import keepwarm
from support.repo_builders import place
from support.server_process import ServerProcess

OPSET = 17
LIMIT = 4 * 1024 * 1024  # the served repository's message limit (``OPTIONS``)
OPTIONS = ("--max-body-bytes", str(LIMIT), "--poll-seconds", "0.2", "--management-api")
READY_TIMEOUT_S = 120.0
X = np.array([[1.0, 2.0, 3.0, 4.0], [-1.0, 0.5, 0.0, 2.0]], dtype=np.float32)
WEIGHTS = (np.arange(12, dtype=np.float32).reshape(4, 3) - 5) / 7
TYPES = {
    "BOOL": TensorProto.BOOL,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}
TOKEN = "grpc-test-token"
SRC = Path(keepwarm.__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parents[1]


def _save(graph: onnx.GraphProto) -> dict[str, bytes | str]:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return {"model.onnx": model.SerializeToString()}


def mlp(scale: float) -> dict[str, bytes | str]:
    """The files of an MLP version: ``y = x @ (W * scale)``, x float32 ``[N, 4]``."""
    weights = numpy_helper.from_array(WEIGHTS * scale, "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [weights],
    )
    return _save(graph)


def identities(datatypes: list[str]) -> dict[str, bytes | str]:
    names = {datatype: datatype.lower() for datatype in datatypes}
    graph = helper.make_graph(
        [helper.make_node("Identity", [n], [f"{n}_out"]) for n in names.values()],
        "types",
        [helper.make_tensor_value_info(n, TYPES[d], [f"n_{n}", 2]) for d, n in names.items()],
        [helper.make_tensor_value_info(f"{n}_out", TYPES[d], [f"n_{n}", 2])
         for d, n in names.items()],
    )  # fmt: skip
    return _save(graph)


def build(root: Path) -> Path:
    """Each version placed whole (marker last), so the server takes it at its first scan."""
    (root / "mlp").mkdir(parents=True)
    (root / "mlp" / "model.toml").write_text(
        '[versions]\npolicy = "all"\n\n[labels]\nstable = 1\ncanary = 2\n'
    )
    for version in (1, 2):
        place(root / "mlp", version, files=mlp(float(version)))
    place(root / "types", 1, files=identities(list(TYPES)))
    place(root / "typed", 1, files=identities([t for t in TYPES if t != "FP16"]))
    place(root / "spare", 1, files=mlp(3.0))
    place(root / "swap", 1, files=mlp(1.0))
    return root


def direct(
    root: Path, model: str, version: int, inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The in-process answer of ``model`` version ``version``: what the server must equal."""
    return dict(keepwarm.load(str(root / model / str(version))).predict(inputs))


@contextmanager
def serve(root: Path, *options: str) -> Iterator[ServerProcess]:
    """``keepwarm serve`` over ``root`` in its own process (free REST and gRPC ports, the
    management token in its environment), ready; stopped on exit."""
    process = ServerProcess(root, *options, env={"KEEPWARM_MANAGEMENT_TOKEN": TOKEN})
    try:
        yield process
    finally:
        process.stop()


def wait_serving(address: str) -> None:
    """Block until the standard health service says SERVING (it streams each change)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for answer in stub.Watch(health_pb2.HealthCheckRequest(), timeout=READY_TIMEOUT_S):
            if answer.status == health_pb2.HealthCheckResponse.SERVING:
                return


def infer_input(name: str, array: np.ndarray, datatype: str) -> Any:
    """``array`` as a tritonclient gRPC input."""
    import tritonclient.grpc as grpcclient

    given = grpcclient.InferInput(name, list(array.shape), datatype)
    given.set_data_from_numpy(array)
    return given
