"""A plain Python model that calls ``sys.exit()`` or raises ``KeyboardInterrupt`` or
``GeneratorExit`` (``BaseException``s that are not ``Exception``s) in a real server: each
request gets a typed 500 / INTERNAL naming the model and what it raised, over REST and
gRPC, batched or not, in the server's process or a worker's; the server keeps serving,
and a batched model's slots are given back (more failures than slots, then a good
request, each bounded by a client timeout: a slot left counted as running would hang)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
import requests
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from support.hostile_models import place_exiting
from support.server_process import ServerProcess
from support.waiting import wait_until

MODELS = {
    "plain": "",
    "batched": "[batching]\nmax_batch_size = 4\n",
    "worker": "[workers]\nprocesses = 1\n",
    "worker_batched": "[workers]\nprocesses = 1\n\n[batching]\nmax_batch_size = 4\n",
}
RAISED = {-1.0: "SystemExit: 3", -2.0: "KeyboardInterrupt", -3.0: "GeneratorExit"}
CLIENT_TIMEOUT_S = 30.0
ROUNDS = 3  # each kind this many times: more failures than any model's batch slots


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("exiting") / "models"
    for name, toml in MODELS.items():
        place_exiting(root / name, toml)
    place_exiting(root / "fails8", "[batching]\nmax_batch_size = 16\n", cls="FailsAtEight")
    process = ServerProcess(root, "--allow-unsafe")
    yield process
    process.stop()


def _body(first: float) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [first, 1]}]}


def _post(server: ServerProcess, path: str, body: Any) -> requests.Response:
    return requests.post(server.url + path, data=orjson.dumps(body), timeout=CLIENT_TIMEOUT_S)


@pytest.mark.parametrize("name", list(MODELS))
def test_rest_requests_get_a_typed_error_and_the_model_goes_on(
    server: ServerProcess, name: str
) -> None:
    path = f"/v2/models/{name}/infer"
    for _ in range(ROUNDS):
        for first, words in RAISED.items():
            answer = _post(server, path, _body(first))
            assert answer.status_code == 500, answer.text
            assert f"model {name!r} failed: {words}" in answer.json()["error"]
    good = _post(server, path, _body(5.0))
    assert good.status_code == 200, good.text
    assert good.json()["outputs"][0]["data"] == [10.0, 2.0]
    tf_serving = _post(server, f"/v1/models/{name}:predict", {"instances": [[-1.0, 0.0]]})
    assert tf_serving.status_code == 500 and "SystemExit: 3" in tf_serving.text
    assert server.proc.poll() is None


@pytest.mark.parametrize("name", list(MODELS))
def test_grpc_requests_get_internal_and_the_model_goes_on(server: ServerProcess, name: str) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_address)
    try:

        def infer(first: float) -> Any:
            given = grpcclient.InferInput("x", [1, 2], "FP32")
            given.set_data_from_numpy(np.array([[first, 1.0]], dtype=np.float32))
            return client.infer(name, [given], client_timeout=CLIENT_TIMEOUT_S)

        for _ in range(ROUNDS):
            for first, words in RAISED.items():
                with pytest.raises(InferenceServerException) as caught:
                    infer(first)
                assert caught.value.status() == "StatusCode.INTERNAL"
                assert f"model {name!r} failed: {words}" in caught.value.message()
        answer = infer(5.0)
        assert answer.as_numpy("y").tolist() == [[10.0, 2.0]]
    finally:
        client.close()
    assert server.proc.poll() is None


def test_a_bucket_that_fails_to_warm_is_named_in_the_index(server: ServerProcess) -> None:
    """The version serves (READY) with batches capped at 4 rows; a request of 12 rows runs
    in pieces; the repository index gives the failure as its reason."""

    def row() -> dict[str, Any]:
        rows = server.post("/v2/repository/index", {}).json()
        (found,) = [r for r in rows if r["name"] == "fails8"]
        return found  # type: ignore[no-any-return]

    assert wait_until(lambda: "not warmed" in row()["reason"])
    found = row()
    assert found["state"] == "READY"
    assert "batch sizes over 4 not warmed (8: RuntimeError: no room for 8 rows)" in found["reason"]
    body = {"inputs": [{"name": "x", "shape": [12, 2], "datatype": "FP32", "data": [1.0] * 24}]}
    answer = _post(server, "/v2/models/fails8/infer", body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == [2.0] * 24
