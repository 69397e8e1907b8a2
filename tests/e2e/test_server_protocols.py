"""The served APIs through real clients: tritonclient (JSON and binary), TF Serving's
documented REST bodies through plain HTTP and curl, metadata, status, metrics, OpenAPI."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from support.server_process import ServerProcess

RNG = np.random.default_rng(7)
BATCH = RNG.random((3, 784), dtype=np.float32)


def expected(direct_mlp: Any, x: np.ndarray = BATCH) -> np.ndarray:
    return np.asarray(direct_mlp.predict(x)["probs"])


def close(got: Any, want: np.ndarray) -> None:
    np.testing.assert_allclose(np.asarray(got, dtype=np.float32), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("model", ["mlp", "mlp_onnx"])
def test_tritonclient_infer_equals_the_direct_call(
    server: ServerProcess, direct_mlp: Any, binary: bool, model: str
) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(model) and client.is_model_ready(model, "1")
        tensor = triton.InferInput("image", list(BATCH.shape), "FP32")
        tensor.set_data_from_numpy(BATCH, binary_data=binary)
        wanted = triton.InferRequestedOutput("probs", binary_data=binary)
        result = client.infer(model, [tensor], outputs=[wanted], request_id="r1")
        close(result.as_numpy("probs"), expected(direct_mlp))
        assert result.get_response()["model_version"] == "1"
        assert result.get_response()["id"] == "r1"
        for compression in ("gzip", "deflate"):
            again = client.infer(model, [tensor], request_compression_algorithm=compression)
            close(again.as_numpy("probs"), expected(direct_mlp))
        meta = client.get_model_metadata(model)
        assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 784]}]
        config = client.get_model_config(model)
        assert config["input"][0]["data_type"] == "TYPE_FP32"
        stats = client.get_inference_statistics(model)["model_stats"][0]
        assert stats["inference_stats"]["success"]["count"] >= 3
        index = {(m["name"], m.get("version")): m for m in client.get_model_repository_index()}
        assert index[(model, "1")]["state"] == "READY"
        assert client.get_server_metadata()["name"] == "keepwarm"
    finally:
        client.close()


def test_v2_json_by_hand_with_nested_data_and_requested_outputs(
    server: ServerProcess, direct_mlp: Any
) -> None:
    body = {
        "inputs": [
            {"name": "image", "datatype": "FP32", "shape": [3, 784], "data": BATCH.tolist()}
        ],
        "outputs": [{"name": "probs"}],
    }
    answer = server.post("/v2/models/mlp/versions/1/infer", body)
    assert answer.status_code == 200, answer.text
    out = answer.json()["outputs"][0]
    assert out["shape"] == [3, 10] and out["datatype"] == "FP32"
    close(np.reshape(out["data"], (3, 10)), expected(direct_mlp))


def test_v2_json_data_cut_out_of_the_body_gives_the_same_answers(
    server: ServerProcess, direct_mlp: Any
) -> None:
    """``data`` arrays read by simdjson apart from the rest of the body: small ones on the
    event loop, large ones (0.6 MB) on a worker thread in pieces; flat and nested alike.
    A ragged nested array is refused with the message of the orjson-only path."""
    from keepwarm.errors import InvalidInputError
    from keepwarm.protocol import jsonio, v2

    big = RNG.random((40, 784), dtype=np.float32)
    for x in (BATCH, big):
        for data in (x.ravel().tolist(), x.tolist()):
            tensor = {"name": "image", "datatype": "FP32", "shape": list(x.shape), "data": data}
            answer = server.post("/v2/models/mlp/infer", {"inputs": [tensor]})
            assert answer.status_code == 200, answer.text
            out = answer.json()["outputs"][0]
            close(np.reshape(out["data"], out["shape"]), expected(direct_mlp, x))
    ragged = [*big.tolist()[:-1], big[-1, :-1].tolist()]
    body = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [40, 784], "data": ragged}]}
    with pytest.raises(InvalidInputError) as plain:
        v2._decoded(jsonio.loads(json.dumps(body).encode(), max_depth=64), memoryview(b""))
    refused = server.post("/v2/models/mlp/infer", body)
    assert refused.status_code == 400 and refused.json()["error"] == str(plain.value)


def test_tf_serving_row_and_columnar_bodies(server: ServerProcess, direct_mlp: Any) -> None:
    want = expected(direct_mlp)
    rows = server.post("/v1/models/mlp:predict", {"instances": BATCH.tolist()})
    assert rows.status_code == 200, rows.text
    close(rows.json()["predictions"], want)
    named = server.post(
        "/v1/models/mlp/versions/1:predict",
        {"signature_name": "serving_default", "instances": [{"image": r} for r in BATCH.tolist()]},
    )
    close(named.json()["predictions"], want)
    columns = server.post("/v1/models/mlp_onnx:predict", {"inputs": {"image": BATCH.tolist()}})
    assert columns.status_code == 200, columns.text
    close(columns.json()["outputs"], want)
    bare = server.post("/v1/models/mlp:predict", {"inputs": BATCH.tolist()})
    close(bare.json()["outputs"], want)


def test_tf_serving_large_bodies_give_the_same_answers(
    server: ServerProcess, direct_mlp: Any
) -> None:
    """Bodies over 64 KiB are parsed on a worker thread, their tensors in pieces."""
    big = RNG.random((40, 784), dtype=np.float32)  # about 0.6 MB of JSON
    want = expected(direct_mlp, big)
    rows = server.post("/v1/models/mlp:predict", {"instances": big.tolist()})
    assert rows.status_code == 200, rows.text
    close(rows.json()["predictions"], want)
    columns = server.post("/v1/models/mlp:predict", {"inputs": {"image": big.tolist()}})
    assert columns.status_code == 200, columns.text
    close(columns.json()["outputs"], want)
    ragged = [*big.tolist()[:-1], big[-1, :-1].tolist()]
    refused = server.post("/v1/models/mlp:predict", {"instances": ragged})
    assert refused.status_code == 400 and "rectangular" in refused.json()["error"]


def test_tf_serving_b64_strings(server: ServerProcess) -> None:
    raw = [b"\x00\xffbinary", b"plain"]
    body = {"instances": [{"b64": base64.b64encode(v).decode()} for v in raw]}
    answer = server.post("/v1/models/text:predict", body)
    assert answer.status_code == 200, answer.text
    rows = answer.json()["predictions"]
    assert [row["length"] for row in rows] == [len(v) for v in raw]
    assert [base64.b64decode(row["echo_bytes"]["b64"]) for row in rows] == raw
    columns = server.post("/v1/models/text:predict", {"inputs": {"text": ["abc", "de"]}})
    assert columns.json()["outputs"]["length"] == [3, 2]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_with_the_documented_bodies(
    server: ServerProcess, direct_mlp: Any, tmp_path: Path
) -> None:
    def curl(path: str, body: dict[str, Any]) -> Any:
        file = tmp_path / "body.json"
        file.write_text(json.dumps(body))
        done = subprocess.run(
            ["curl", "-sS", "--fail-with-body", "-d", f"@{file}", server.url + path],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return json.loads(done.stdout)

    want = expected(direct_mlp, BATCH[:1])
    close(curl("/v1/models/mlp:predict", {"instances": BATCH[:1].tolist()})["predictions"], want)
    v2 = {"inputs": [{"name": "image", "shape": [1, 784], "datatype": "FP32",
                      "data": BATCH[0].tolist()}]}  # fmt: skip
    out = curl("/v2/models/mlp/infer", v2)["outputs"][0]
    close(np.reshape(out["data"], out["shape"]), want)


def test_status_and_metadata(server: ServerProcess) -> None:
    status = server.get("/v1/models/mlp").json()["model_version_status"]
    assert status == [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]
    assert server.get("/v1/models/mlp/versions/1").status_code == 200
    broken = server.get("/v1/models/broken").json()["model_version_status"][0]
    assert broken["state"] == "END" and broken["status"]["error_message"]
    meta = server.get("/v1/models/mlp/metadata").json()
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["image"]["dtype"] == "DT_FLOAT"
    assert server.get("/v2/models/mlp/versions/1").json()["versions"] == ["1"]
    assert server.get("/v2/health/live").json() == {"live": True}
    assert server.get("/v2").json()["extensions"]


def test_metrics_count_requests_per_model_version_and_protocol(server: ServerProcess) -> None:
    server.post("/v1/models/mlp:predict", {"instances": BATCH[:1].tolist()})
    text = server.get("/metrics").text
    assert 'keepwarm_requests_total{code="OK",model="mlp",protocol="tfserving",version="1"}' in text
    assert "keepwarm_request_seconds_bucket" in text
    assert "keepwarm_process_resident_bytes" in text
    assert 'keepwarm_model_bytes{model="mlp",version="1"}' in text
    assert 'keepwarm_load_seconds_count{model="mlp"} 1.0' in text
    assert "keepwarm_cache_hits_total" in text and "keepwarm_requests_in_flight 0.0" in text


def test_openapi_document_is_served(server: ServerProcess) -> None:
    document = server.get("/openapi.json").json()
    assert "/v2/models/{model}/infer" in document["paths"]
    assert "/v1/models/{model}:predict" in document["paths"]
