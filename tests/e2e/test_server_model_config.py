"""A ``model.toml`` made invalid while the server runs: the version loaded keeps serving
with the last good configuration, and the server says so: in the log (once), in TF
Serving's status of each version (``status.error_code`` and ``error_message``, as for a
failed load; REST and gRPC) and in the v2 repository index's ``reason``. Fixed, the error
goes from status and the log says so."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.server_process import ServerProcess

GOOD = "[batching]\nmax_batch_size = 32\n"
ROW = [0.5] * 784


@pytest.fixture
def served(tmp_path: Path, example_models: Path) -> Iterator[ServerProcess]:
    root = tmp_path / "models"
    shutil.copytree(example_models / "mlp_onnx", root / "m")
    (root / "m" / "model.toml").write_text(GOOD)
    process = ServerProcess(root, "--poll-seconds", "0.1", "--no-watch")
    yield process
    process.stop()


def _status(server: ServerProcess) -> list[dict[str, Any]]:
    answer = server.get("/v1/models/m")
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()["model_version_status"]
    return rows


def _grpc_status(server: ServerProcess) -> Any:
    import grpc

    from keepwarm.grpc.protos.tensorflow_serving.apis import (
        get_model_status_pb2,
        model_service_pb2_grpc,
    )

    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "m"
        return stub.GetModelStatus(request, timeout=30).model_version_status[0]


def test_an_invalid_model_toml_is_reported_while_the_old_version_serves(
    served: ServerProcess,
) -> None:
    assert _status(served) == [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]
    config = served.root / "m" / "model.toml"
    config.write_text("[batching\nmax_batch_size = 'lots'\n")
    served.wait_for_line(
        r"model .m.: its model\.toml is invalid; serving on with its last good", 30
    )

    (row,) = _status(served)
    assert row["state"] == "AVAILABLE" and row["status"]["error_code"] == "UNKNOWN"
    message = row["status"]["error_message"]
    assert "model.toml is invalid" in message and "last good configuration" in message
    assert str(served.root) not in message  # relative paths only
    grpc_row = _grpc_status(served)
    assert grpc_row.state == 30 and "model.toml is invalid" in grpc_row.status.error_message
    index = served.post("/v2/repository/index").json()
    assert index[0]["state"] == "READY" and "model.toml is invalid" in index[0]["reason"]
    answer = served.post("/v1/models/m:predict", {"instances": [ROW]})
    assert answer.status_code == 200, answer.text
    assert served.get("/v2/models/m/ready").status_code == 200

    config.write_text(GOOD)
    served.wait_for_line(r"model .m.: its model\.toml is valid again", 30)
    assert _status(served)[0]["status"] == {"error_code": "OK", "error_message": ""}
    assert served.post("/v2/repository/index").json()[0]["reason"] == ""
    assert served.output.count("its model.toml is invalid") == 1  # said once, not per scan


def test_a_new_model_whose_model_toml_was_never_valid_says_nothing_loads(
    served: ServerProcess,
) -> None:
    """Hostile contents: bytes that are not text."""
    shutil.copytree(served.root / "m", served.root / "n", ignore=shutil.ignore_patterns("*.toml"))
    (served.root / "n" / "model.toml").write_bytes(bytes(range(128, 256)))
    served.wait_for_line(r"model 'n': its model\.toml is invalid; nothing loads until", 30)
    answer = served.get("/v1/models/n")
    assert answer.status_code == 200, answer.text
    (row,) = answer.json()["model_version_status"]
    assert row["state"] != "AVAILABLE" and row["status"]["error_code"] == "UNKNOWN"
    assert "not UTF-8" in row["status"]["error_message"]
    assert "no version loads until it is fixed" in row["status"]["error_message"]
    assert _status(served)[0]["status"]["error_code"] == "OK"  # the other model: unaffected
